public import Foundation
import Logging
import Synchronization

/// Spreads a pool's work over several tokens that hold the same root keys, takes a token out of
/// service when it fails, probes it in the background and brings it back.
///
/// Each token has a ``SessionPool`` of its own (its workers, key-handle cache, recovery and
/// breaker): a handle is only valid in the session that made it, so unwrapped keys are cached per
/// token. This object chooses the token for each call:
/// - an operation that leaves nothing behind on the token (``HSMOperation/isReplicable``) goes to
///   the in-service token with the fewest calls in flight (the current worker's own token first,
///   which saves a thread hop), and when that token fails with a device or session error it is
///   taken out and the call runs again on another: the same keys give the same answer. A token
///   that does not find a key (or finds it labelled twice) where another token then answers is
///   taken out too, as the wrong token (``TokenStatus/wrongTokenClass``); when no token finds
///   it, the caller named a key nobody holds and no token is taken out;
/// - anything else (token-object reads and writes, Ed25519 signatures with keys only the first
///   token holds, custom bodies) runs on the first token only and is never repeated elsewhere, so
///   nothing is done twice or on a token that lacks the object.
final class TokenFailover: Sendable {
    /// The pools of the tokens after the first; the first (the primary, which owns this object)
    /// is passed to every call so that neither holds the other twice.
    let replicas: [SessionPool]
    private let states: Mutex<[TokenState]>
    private let loads: [LoadCounter]
    private let rotation = Atomic<Int>(0)
    private let prober = Mutex<Task<Void, Never>?>(nil)
    private let probeInterval: Duration
    private let logger: Logger
    /// Run on a token before a probe brings it back (``SessionPool/checkTokensBeforeTheirReturn(_:)``).
    private let returnCheck = Mutex<(@Sendable (SessionPool) async throws -> Void)?>(nil)

    /// Most tokens one pool routes over (calls remember the tokens they tried in a bit set).
    static let maxTokens = 64

    private struct TokenState {
        var inService = true
        var takenOut = 0
        var broughtBack = 0
        /// The return check refused it since it was taken out (logged once, not every probe).
        var returnRefused = false
        /// Taken out for its keys (the wrong token, or refused by the return check), not for its
        /// device: it may answer every call, with other keys. Only a probe that passes the
        /// return check brings it back; calls never fall back to it meanwhile.
        var keysInDoubt = false
        /// When it was last taken out (wall clock, for operators), while it is out.
        var outSince: Date?
        /// ``HSMError/failureClass`` of the failure that last took it out, or
        /// ``TokenStatus/wrongTokenClass``.
        var lastErrorClass: String?
        /// Probes since it was last taken out, and when the last one ran.
        var probes = 0
        var lastProbe: Date?
    }

    private final class LoadCounter: Sendable {
        let value = Atomic<Int>(0)
    }

    init(replicas: [SessionPool], probeInterval: Duration, logger: Logger) {
        self.replicas = replicas
        let count = replicas.count + 1
        states = Mutex(Array(repeating: TokenState(), count: count))
        loads = (0..<count).map { _ in LoadCounter() }
        self.probeInterval = probeInterval
        self.logger = logger
    }

    private func pool(_ index: Int, primary: SessionPool) -> SessionPool {
        index == 0 ? primary : replicas[index - 1]
    }

    // MARK: Calls

    func run<R: Sendable>(
        _ operation: HSMOperation, primary: SessionPool, _ body: @escaping @Sendable (HSMSession) throws -> R
    ) async throws -> R {
        guard operation.isReplicable else { return try await attempt(0, primary: primary, operation, body) }
        var tried: UInt64 = 0
        var failure: HSMError?
        // Tokens that could not find a key as one label names it (missing, or several objects):
        // their fault only if another token answers, else the caller named a key no token holds.
        var mismatched: [(index: Int, error: HSMError)] = []
        while let index = choose(preferred: currentToken(primary), tried: tried) {
            tried |= 1 << UInt64(index)
            do {
                let result = try await attempt(index, primary: primary, operation, body)
                for suspect in mismatched {
                    takeOut(suspect.index, pool: pool(suspect.index, primary: primary), errorClass: TokenStatus.wrongTokenClass, error: suspect.error)
                }
                return result
            } catch let error as HSMError where error.takesTokenOutOfService {
                failure = error
            } catch let error as HSMError where error.isTransientFailure {
                // Another token may answer; this one stays in service (the same input may fail
                // on every token, and must not take them all out).
                failure = failure ?? error
            } catch let error as HSMError where error.mayMeanWrongToken {
                mismatched.append((index, error))
            }
        }
        throw mismatched.first?.error ?? failure
            ?? HSMError.unavailable(reason: "no HSM token in service", retryAfterNanoseconds: probeInterval.nanoseconds)
    }

    /// One attempt on one token; a device or session failure takes the token out of service.
    private func attempt<R: Sendable>(
        _ index: Int, primary: SessionPool, _ operation: HSMOperation, _ body: @escaping @Sendable (HSMSession) throws -> R
    ) async throws -> R {
        let pool = pool(index, primary: primary)
        loads[index].value.wrappingAdd(1, ordering: .relaxed)
        defer { loads[index].value.wrappingSubtract(1, ordering: .relaxed) }
        do {
            return try await pool.withTokenSession(operation, body)
        } catch let error as HSMError where error.takesTokenOutOfService {
            takeOut(index, pool: pool, errorClass: error.failureClass, error: error)
            throw error
        }
    }

    /// The token whose worker thread runs the caller, if any: a call there needs no thread hop.
    private func currentToken(_ primary: SessionPool) -> Int? {
        guard let pool = SessionWorker.current?.pool else { return nil }
        if pool === primary { return 0 }
        return replicas.firstIndex { $0 === pool }.map { $0 + 1 }
    }

    /// The next token to try: the preferred one if it is in service and untried, else the
    /// untried in-service token with the fewest calls in flight (ties go round robin). When no
    /// token is in service, the untried ones are tried anyway: their own breakers answer at
    /// once while they are down, and a token that came back serves before its probe notices.
    /// Not a token out for its keys: it answers, with keys that are not the replicas' (another
    /// root's MACs, or a planted key's).
    private func choose(preferred: Int?, tried: UInt64) -> Int? {
        states.withLock { states in
            let count = states.count
            if let preferred, tried & (1 << UInt64(preferred)) == 0, states[preferred].inService { return preferred }
            let start = Int(UInt(bitPattern: rotation.wrappingAdd(1, ordering: .relaxed).oldValue) % UInt(count))
            var best: Int?
            var bestLoad = Int.max
            for offset in 0..<count {
                let index = (start + offset) % count
                guard tried & (1 << UInt64(index)) == 0, states[index].inService else { continue }
                let load = loads[index].value.load(ordering: .relaxed)
                if load < bestLoad {
                    best = index
                    bestLoad = load
                }
            }
            if best != nil || states.contains(where: \.inService) { return best }
            return (0..<count).map { (start + $0) % count }.first { tried & (1 << UInt64($0)) == 0 && !states[$0].keysInDoubt }
        }
    }

    private func takeOut(_ index: Int, pool: SessionPool, errorClass: String, error: HSMError) {
        let wasInService = states.withLock { states in
            defer {
                states[index].inService = false
                if errorClass == TokenStatus.wrongTokenClass { states[index].keysInDoubt = true }
            }
            guard states[index].inService else { return false }
            states[index].takenOut += 1
            states[index].returnRefused = false
            states[index].outSince = Date()
            states[index].lastErrorClass = errorClass
            states[index].probes = 0
            return true
        }
        guard wasInService else { return }
        pool.metrics.tokenInService.record(0)
        logger.warning("HSM token taken out of service", metadata: ["token": "\(pool.configuration.token)", "class": "\(errorClass)", "error": "\(error)"])
    }

    // MARK: Probing

    /// Probes every token out of service each ``HSMConfiguration/tokenProbeInterval`` until
    /// ``stop()``.
    func startProbing(primary: SessionPool) {
        let task = Task.detached { [probeInterval] in
            while !Task.isCancelled {
                try? await Task.sleep(for: probeInterval)
                await self.probe(primary: primary)
            }
        }
        prober.withLock { $0 = task }
    }

    func stop() async {
        let task = prober.withLock { task in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    /// One RNG call on each token out of service, through its own pool: while the device is
    /// down its breaker answers at once, and once the breaker's pause is over the call
    /// re-initialises the library and logs in again; a success brings the token back.
    private func probe(primary: SessionPool) async {
        let out = states.withLock { states in states.indices.filter { !states[$0].inService } }
        for index in out where !Task.isCancelled {
            let pool = pool(index, primary: primary)
            let answered: Bool
            do {
                _ = try await pool.withTokenSession(.random, { session in try session.pkcs11.generateRandom(count: 1) })
                answered = true
            } catch {
                answered = false
            }
            states.withLock { states in
                states[index].probes += 1
                states[index].lastProbe = Date()
            }
            guard answered else { continue }
            // A token that answers again may not be the one that left: a partition re-made, or
            // re-initialised and given another root, would answer every call routed to it with
            // other keys (wrong MACs, not errors).
            if let check = returnCheck.withLock({ $0 }) {
                do {
                    try await check(pool)
                } catch let error as HSMError {
                    // Not a verdict on its keys: a token did not answer the check (this one
                    // flapping, or the one it is compared with failing meanwhile). The next
                    // probe checks again; meanwhile nothing marks its keys as in doubt.
                    logger.info("HSM token answers again; its check before the return could not be made yet", metadata: [
                        "token": "\(pool.configuration.token)", "error": "\(error)",
                    ])
                    continue
                } catch {
                    let first = states.withLock { states in
                        defer {
                            states[index].returnRefused = true
                            states[index].keysInDoubt = true
                            states[index].lastErrorClass = "fails the check before its return"
                        }
                        return !states[index].returnRefused
                    }
                    if first {
                        logger.error("HSM token answers again but is kept out of service: it fails the check before its return", metadata: [
                            "token": "\(pool.configuration.token)", "error": "\(error)",
                        ])
                    }
                    continue
                }
            }
            states.withLock { states in
                states[index].inService = true
                states[index].keysInDoubt = false
                states[index].broughtBack += 1
                states[index].outSince = nil
            }
            pool.metrics.tokenInService.record(1)
            logger.notice("HSM token back in service", metadata: ["token": "\(pool.configuration.token)"])
        }
    }

    func setReturnCheck(_ check: @escaping @Sendable (SessionPool) async throws -> Void) {
        returnCheck.withLock { $0 = check }
    }

    // MARK: Status

    func statuses(primary: SessionPool) -> [TokenStatus] {
        states.withLock { states in
            states.indices.map { index in
                TokenStatus(
                    token: String(describing: pool(index, primary: primary).configuration.token), inService: states[index].inService,
                    takenOut: states[index].takenOut, broughtBack: states[index].broughtBack, outOfServiceSince: states[index].outSince,
                    lastErrorClass: states[index].lastErrorClass, probesWhileOut: states[index].probes, lastProbe: states[index].lastProbe,
                    keysInDoubt: states[index].keysInDoubt
                )
            }
        }
    }
}

/// One token of a pool, for `custos hsm status`, health checks and tests.
public struct TokenStatus: Sendable, Hashable, Codable {
    /// The token selector (label or serial), never a PIN or a slot number.
    public let token: String
    public let inService: Bool
    /// Times the token was taken out of service after a device or session error.
    public let takenOut: Int
    /// Times a probe brought it back.
    public let broughtBack: Int
    /// While out of service: since when (wall clock).
    public let outOfServiceSince: Date?
    /// ``HSMError/failureClass`` of the failure that last took it out, or
    /// ``TokenStatus/wrongTokenClass`` (`nil`: never taken out).
    public let lastErrorClass: String?
    /// Probes (one RNG call each) since it was last taken out, and when the last one ran.
    public let probesWhileOut: Int
    public let lastProbe: Date?
    /// Out for its keys (the wrong token, or refused by the return check), not for its device:
    /// it may answer calls, with other keys. Nothing is sent to it or stored on it until a probe
    /// passes the return check.
    public let keysInDoubt: Bool

    /// ``lastErrorClass`` of a token taken out because a replica found a key it could not
    /// (missing, or labelled twice): the token is not the replica it should be, which no retry
    /// on it mends; it comes back only once its return check passes.
    public static let wrongTokenClass = "wrong token: its keys differ from its replicas'"

    public init(
        token: String, inService: Bool, takenOut: Int = 0, broughtBack: Int = 0, outOfServiceSince: Date? = nil,
        lastErrorClass: String? = nil, probesWhileOut: Int = 0, lastProbe: Date? = nil, keysInDoubt: Bool = false
    ) {
        self.token = token
        self.inService = inService
        self.takenOut = takenOut
        self.broughtBack = broughtBack
        self.outOfServiceSince = outOfServiceSince
        self.lastErrorClass = lastErrorClass
        self.probesWhileOut = probesWhileOut
        self.lastProbe = lastProbe
        self.keysInDoubt = keysInDoubt
    }
}

extension HSMOperation {
    /// Whether a call may run on any token and, when one fails under it, again on another: the
    /// operation reads keys every replica holds and leaves nothing on the token (a generated
    /// tenant key is a session object, wrapped out and destroyed in the same body). Token-object
    /// reads and writes (``custom``) and Ed25519 signatures (``sign``: webhook keys are token
    /// objects of the first token) are not.
    var isReplicable: Bool {
        switch self {
        case .hmac, .prf, .seal, .open, .wrap, .unwrap, .verify, .random, .cmac, .generate: true
        case .sign, .custom: false
        }
    }
}

extension HSMError {
    /// Whether the failure says the token, not the request, is the problem: its device or
    /// sessions are gone (after the pool's own recovery and retry), its breaker is open, or its
    /// PIN cannot be used.
    var takesTokenOutOfService: Bool {
        switch self {
        case .unavailable, .pinRejected, .pinLocked, .loginUnverifiable: true
        case .exhausted, .pinUnreadable, .keyNotFound, .duplicateKey, .operationFailed, .transientFailure, .notRunning, .configuration: false
        }
    }

    var isTransientFailure: Bool {
        if case .transientFailure = self { true } else { false }
    }

    /// Whether the failure may say the token holds other keys than its replicas: a key it does
    /// not find, or finds twice. Alone it does not tell the token's fault from the caller's (a
    /// key no token holds): ``TokenFailover`` decides by whether another token answers.
    var mayMeanWrongToken: Bool {
        switch self {
        case .keyNotFound, .duplicateKey: true
        default: false
        }
    }
}

import Crypto
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Fails the next `count` calls of each of the functions, then behaves.
final class NextCallsFail: PKCS11FaultInjector {
    private let returnValue: PKCS11ReturnValue
    private let remaining: Mutex<[PKCS11Function: Int]>

    init(_ functions: PKCS11Function..., returnValue: PKCS11ReturnValue, count: Int = 1) {
        self.returnValue = returnValue
        remaining = Mutex(Dictionary(uniqueKeysWithValues: functions.map { ($0, count) }))
    }

    convenience init(_ function: PKCS11Function, _ returnValue: PKCS11ReturnValue, count: Int = 1) {
        self.init(function, returnValue: returnValue, count: count)
    }

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        remaining.withLock { remaining in
            guard let left = remaining[function], left > 0 else { return nil }
            remaining[function] = left - 1
            return returnValue
        }
    }
}

/// Every `C_Login` blocks until ``release()`` (at most 10 s); after that, the next `C_Sign`
/// answers `CKR_USER_NOT_LOGGED_IN` once.
final class LoginBlockedThenSignFails: PKCS11FaultInjector {
    let loggingIn = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)
    private let signFails = NextCallsFail(.sign, .userNotLoggedIn)

    func release() { released.store(true, ordering: .relaxed) }

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        if function == .login {
            loggingIn.store(true, ordering: .relaxed)
            for _ in 0..<5_000 where !released.load(ordering: .relaxed) { usleep(2_000) }
            return nil
        }
        return released.load(ordering: .relaxed) ? signFails.fault(for: function) : nil
    }
}

/// Fails every call of the functions named, with the value named, until removed.
final class FaultsByFunction: PKCS11FaultInjector {
    private let faults: [PKCS11Function: PKCS11ReturnValue]
    init(_ faults: [PKCS11Function: PKCS11ReturnValue]) { self.faults = faults }
    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? { faults[function] }
}

/// A device error on the first `C_Sign`; every `C_Initialize` then blocks until ``release()``
/// (at most 10 s), as a network HSM's re-initialisation can take seconds — here for exactly as
/// long as the test needs, whatever the machine's load.
final class DeviceLostSlowReinitialisation: PKCS11FaultInjector {
    private let signFails = NextCallsFail(.sign, .deviceError)
    /// Set once a re-initialisation has begun (the pool is drained and waiting on it).
    let reinitialising = Atomic<Bool>(false)
    private let released = Atomic<Bool>(false)

    func release() { released.store(true, ordering: .relaxed) }

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        if function == .initialize {
            reinitialising.store(true, ordering: .relaxed)
            for _ in 0..<5_000 where !released.load(ordering: .relaxed) { usleep(2_000) }
        }
        return signFails.fault(for: function)
    }
}

/// "answered", or the class of the pool's refusal (``HSMError/failureClass``).
private func answer(_ pool: SessionPool, _ known: KnownHMACKey, _ data: [UInt8]) async -> String {
    do {
        _ = try await pool.hmacSHA256(key: known.key, data: data)
        return "answered"
    } catch let error as HSMError {
        return error.failureClass
    } catch {
        return "\(error)"
    }
}

/// Each test here gets its own token and its own copy of the module (SoftHSM, and NSS softokn
/// as the second implementation), because it logs out, closes all sessions or finalizes the
/// library: process-wide state.
@Suite("Fault injection and recovery", .serialized)
struct FaultInjectionTests {
    @Test("Under load with session-fatal, login-lost and device faults plus real resets: every answer is right or retryable, then all succeed", arguments: TestBackend.allCases)
    func faultsUnderLoad(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("faults")
        let pool = try await startedPool(token, workers: 2, module: module)
        let known = KnownHMACKey()
        let faults = RandomFaults([
            .sign: [(.sessionHandleInvalid, 0.01), (.userNotLoggedIn, 0.005), (.deviceError, 0.002), (.sessionClosed, 0.005)],
            .signInit: [(.keyHandleInvalid, 0.005)],
        ])
        let before = pool.statistics
        module.installFaultInjector(faults)
        let succeeded = Tally()
        let retryable = Tally()
        let wrong = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<64 {
                group.addTask {
                    for index in 0..<60 {
                        let data = message(task, index)
                        do {
                            let mac = try await pool.hmacSHA256(key: known.key, data: data)
                            if mac == known.expected(data) { succeeded.add() } else { wrong.add() }
                        } catch let error as HSMError where error.isRetryable {
                            retryable.add()
                        } catch {
                            wrong.note("\(error)")
                            wrong.add()
                        }
                    }
                }
            }
            // Real teardown while the load runs: the pool drains in-flight calls first, because
            // SoftHSM crashes if C_CloseAllSessions or C_Logout races with them.
            group.addTask {
                for _ in 0..<3 {
                    try await Task.sleep(for: .milliseconds(20))
                    try await pool.resetSessions()
                    try await Task.sleep(for: .milliseconds(20))
                    try await pool.relogin()
                }
            }
            try await group.waitForAll()
        }
        module.installFaultInjector(nil)
        let injected = faults.injected.withLock { $0.values.reduce(0, +) }
        #expect(wrong.value == 0, "\(wrong.lines.prefix(3))")
        #expect(succeeded.value + retryable.value == 64 * 60)
        #expect(injected > 20, "the plan injected \(injected) faults")
        // Each fault class really triggered its recovery.
        let after = pool.statistics
        #expect(after.epoch > before.epoch, "device recovery re-initialised the library")
        #expect(after.generation > before.generation + 6, "re-logins and resets started new generations")

        // After recovery every call succeeds.
        for index in 0..<300 {
            let data = message(999, index)
            #expect(try await pool.hmacSHA256(key: known.key, data: data) == known.expected(data))
        }
        await pool.shutdown()
    }

    @Test("A device that stays down opens the circuit (fast 'unavailable'), and the pool recovers when it returns", arguments: TestBackend.allCases)
    func circuitBreaker(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("breaker")
        let pool = try await startedPool(token, workers: 1, module: module)
        let known = KnownHMACKey()
        _ = try await pool.hmacSHA256(key: known.key, data: [1])
        // The device fails, and so does re-initialisation (C_Initialize answers DEVICE_ERROR).
        module.installFaultInjector(RandomFaults([.sign: [(.deviceError, 1)], .initialize: [(.deviceError, 1)]]))
        await #expect(throws: HSMError.self) { _ = try await pool.hmacSHA256(key: known.key, data: [2]) }
        #expect(pool.statistics.breakerOpen)
        do {
            _ = try await pool.hmacSHA256(key: known.key, data: [3])
            Issue.record("expected unavailable")
        } catch let error as HSMError {
            #expect(error.isRetryable)
            guard case .unavailable = error else { Issue.record("got \(error)"); return }
        }
        module.installFaultInjector(nil)
        // Once the pause (≤ 200 ms in tests) is over, the next call re-initialises and succeeds.
        var recovered = false
        for _ in 0..<50 where !recovered {
            try await Task.sleep(for: .milliseconds(20))
            recovered = (try? await pool.hmacSHA256(key: known.key, data: [4])) == known.expected([4])
        }
        #expect(recovered)
        #expect(pool.statistics.breakerOpen == false)
        await pool.shutdown()
    }

    @Test("Callers whose wait for a session a slow re-initialisation outlasts are told 'unavailable', not 'exhausted'; the failed call itself succeeds", arguments: TestBackend.allCases)
    func waitOutlastedByRecovery(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("slowinit")
        let pool = try await startedPool(token, workers: 1, acquireTimeout: .milliseconds(100), module: module)
        let known = KnownHMACKey()
        _ = try await pool.hmacSHA256(key: known.key, data: [1])
        let slow = DeviceLostSlowReinitialisation()
        module.installFaultInjector(slow)
        // The one worker re-initialises until released; the waiters, queued once it has begun,
        // run out of their 100 ms meanwhile.
        let lost = Task { try await pool.hmacSHA256(key: known.key, data: [2]) }
        for _ in 0..<2_500 where !slow.reinitialising.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(2)) }
        let begun = slow.reinitialising.load(ordering: .relaxed)
        #expect(begun, "the re-initialisation began")
        let waiters = (0..<3).map { index in Task { await answer(pool, known, [3, UInt8(index)]) } }
        var answers = [String]()
        for waiter in waiters { answers.append(await waiter.value) }
        slow.release()
        #expect(answers == ["unavailable", "unavailable", "unavailable"])
        #expect(try await lost.value == known.expected([2]))
        module.installFaultInjector(nil)
        #expect(try await pool.hmacSHA256(key: known.key, data: [4]) == known.expected([4]))
        await pool.shutdown()
    }

    @Test("A caller that waited on busy sessions is told 'exhausted', though the persistent session was lost and replaced meanwhile (no drain): a loaded instance stays SERVING", arguments: TestBackend.allCases)
    func busyWaitAcrossPersistentSessionLoss(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("busyloss")
        let pool = try await startedPool(token, workers: 2, acquireTimeout: .milliseconds(300), module: module)
        let known = KnownHMACKey()
        // Both workers busy for 900 ms. The caller below starts waiting; then the second
        // worker resolves a key, whose import finds the persistent session gone (which the
        // session confirms: a new generation, no drain), and retries.
        module.installFaultInjector(NextCallsFail(.createObject, .getSessionInfo, returnValue: .sessionHandleInvalid))
        let first = Task { try await pool.withSession { _ in _ = usleep(900_000) } }
        let second = Task {
            try await pool.withSession { session in
                _ = usleep(150_000)
                _ = try session.handle(for: known.key)
                _ = usleep(750_000)
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(await answer(pool, known, [1]) == "sessions exhausted")
        try await first.value
        try await second.value
        module.installFaultInjector(nil)
        #expect(try await pool.hmacSHA256(key: known.key, data: [2]) == known.expected([2]))
        await pool.shutdown()
    }

    @Test("A signature that fails in the persistent session (after its C_SignInit) leaves an operation active there; the next lookup's CKR_OPERATION_ACTIVE replaces that session, with no restart", arguments: TestBackend.allCases)
    func persistentSessionNotPoisoned(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("poisonp")
        let pool = try await startedPool(token, workers: 1, module: module)
        let bytes = [UInt8](repeating: 7, count: 32)
        // A resolver that signs in the persistent session, as tenant keys' MAC checks did.
        let key = HSMKey(id: "test:signs-while-resolving") { session in
            let handle = try session.createObject(Self.hmacKeyTemplate(bytes))
            _ = try session.sign(.sha256HMAC, key: handle, data: [0])
            return handle
        }
        // The first lookup fails (device error: re-initialised), and so does its retry's, which
        // leaves the sign active in the new persistent session.
        let recoveries = try await recoveries(pool, module, NextCallsFail(.sign, .deviceError, count: 2)) {
            await #expect(throws: HSMError.self) { _ = try await pool.hmacSHA256(key: key, data: [1]) }
        } then: { () async throws in
            #expect(try await pool.hmacSHA256(key: key, data: [2]) == Self.hmac([2], bytes))
        }
        #expect(recoveries > 0, "the poisoned persistent session was replaced")
        await pool.shutdown()
    }

    @Test("A check a resolver runs in the caller's session (a row's MAC) fails there alone: the worker replaces its own session, the persistent one and its keys stay", arguments: TestBackend.allCases)
    func resolverCheckFailsInCallersSession(_ backend: TestBackend) async throws {
        let (pool, module, known) = try await servingPool(backend, "poisonc", workers: 1)
        let bytes = [UInt8](repeating: 9, count: 32)
        let key = HSMKey(id: "test:checks-while-resolving", resolveWith: { resolution in
            let handle = try resolution.session.createObject(Self.hmacKeyTemplate(bytes))
            _ = try resolution.operationSession.sign(.sha256HMAC, key: handle, data: [0])
            return handle
        })
        // CKR_ARGUMENTS_BAD leaves the sign active (DESIGN §4) and is surfaced, not recovered.
        let recoveries = try await recoveries(pool, module, NextCallsFail(.sign, .argumentsBad)) {
            await #expect(throws: HSMError.self) { _ = try await pool.hmacSHA256(key: key, data: [2]) }
        } then: { () async throws in
            #expect(try await pool.hmacSHA256(key: key, data: [3]) == Self.hmac([3], bytes))
            #expect(try await pool.hmacSHA256(key: known.key, data: [4]) == known.expected([4]))
        }
        #expect(recoveries == 0, "no recovery ran: the persistent session was never poisoned")
        await pool.shutdown()
    }

    @Test("A body that turns a failed call into an error of its own still loses its session: the next call on that worker finds no operation left active, and no recovery runs", arguments: TestBackend.allCases)
    func sessionReplacedWhateverTheBodyThrows(_ backend: TestBackend) async throws {
        struct OwnError: Error {}
        let (pool, module, known) = try await servingPool(backend, "poisonb", workers: 1)
        let recoveries = try await recoveries(pool, module, NextCallsFail(.sign, .argumentsBad)) {
            await #expect(throws: OwnError.self) {
                try await pool.withSession { session in
                    do { _ = try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: known.key), data: [2]) } catch { throw OwnError() }
                }
            }
        } then: { () async throws in
            #expect(try await pool.hmacSHA256(key: known.key, data: [3]) == known.expected([3]))
        }
        #expect(recoveries == 0, "no recovery: the worker's session was replaced, not reused")
        await pool.shutdown()
    }

    @Test("A session-fatal error in the persistent session's work, then a C_GetSessionInfo that fails otherwise: the session is kept, not forgotten open (which would keep the token from being initialised again)", arguments: TestBackend.allCases)
    func persistentSessionNotForgottenOpen(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("poisonf")
        let pool = try await startedPool(token, workers: 1, module: module)
        let bytes = [UInt8](repeating: 5, count: 32)
        let key = HSMKey(id: "test:made-while-resolving") { session in try session.createObject(Self.hmacKeyTemplate(bytes)) }
        let faults = FaultsByFunction([.createObject: .sessionHandleInvalid, .getSessionInfo: .generalError])
        let generation = pool.statistics.generation
        let recoveries = try await recoveries(pool, module, faults) {
            await #expect(throws: HSMError.self) { _ = try await pool.hmacSHA256(key: key, data: [1]) }
        } then: { () async throws in
            #expect(try await pool.hmacSHA256(key: key, data: [2]) == Self.hmac([2], bytes))
        }
        #expect(pool.statistics.generation == generation && recoveries == 0, "the persistent session was not forgotten")
        await pool.shutdown()
    }

    @Test("A call that waited at the gate through a re-login and then loses its login gets a recovery of its own, not the one it waited through", arguments: TestBackend.allCases)
    func failureAfterWaitingThroughRecovery(_ backend: TestBackend) async throws {
        let (pool, module, known) = try await servingPool(backend, "parked", workers: 2)
        let injector = LoginBlockedThenSignFails()
        module.installFaultInjector(injector)
        let relogin = Task { try await pool.relogin() }
        for _ in 0..<1_000 where !injector.loggingIn.load(ordering: .relaxed) { try await Task.sleep(for: .milliseconds(5)) }
        let before = pool.statistics.generation
        // Parked at the drained gate, with the generation from before the re-login's end.
        let parked = Task { try await pool.hmacSHA256(key: known.key, data: [2]) }
        try await Task.sleep(for: .milliseconds(200))
        injector.release()
        try await relogin.value
        #expect(try await parked.value == known.expected([2]))
        module.installFaultInjector(nil)
        #expect(pool.statistics.generation == before + 2, "the re-login waited through, then the parked call's own")
        await pool.shutdown()
    }

    /// A started pool on a private token of `backend`, whose known key has answered once.
    private func servingPool(_ backend: TestBackend, _ name: String, workers: Int) async throws -> (SessionPool, PKCS11Module, KnownHMACKey) {
        let (token, module) = try backend.isolatedToken(name)
        let pool = try await startedPool(token, workers: workers, module: module)
        let known = KnownHMACKey()
        #expect(try await pool.hmacSHA256(key: known.key, data: [1]) == known.expected([1]))
        return (pool, module, known)
    }

    /// Runs `failing` with `injector` installed, then `answering` without it, and returns how
    /// many new generations (recoveries, a replaced persistent session) `answering` went through.
    private func recoveries(
        _ pool: SessionPool, _ module: PKCS11Module, _ injector: some PKCS11FaultInjector,
        _ failing: () async throws -> Void, then answering: () async throws -> Void
    ) async throws -> UInt64 {
        module.installFaultInjector(injector)
        try await failing()
        module.installFaultInjector(nil)
        let generation = pool.statistics.generation
        try await answering()
        return pool.statistics.generation - generation
    }

    private static func hmacKeyTemplate(_ bytes: [UInt8]) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.genericSecret), .token(false), .private(true), .sensitive(true),
            .extractable(false), .sign(true), .verify(true), .value(SecretBytes(bytes)),
        ]
    }

    private static func hmac(_ data: [UInt8], _ key: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: key)))
    }

    @Test("A session that fails mid-operation is replaced, not reused", arguments: TestBackend.allCases)
    func poisonedSessionReplaced(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("poison")
        try module.initialize()

        // The hazard, shown on a raw session: C_SignInit succeeded, C_Sign failed, and the
        // operation stays active, so the next C_SignInit on that session is refused.
        let raw = try module.openSession(slot: try module.findToken(token.configuration.token).slot)
        try raw.login(.user, pin: token.userPIN)
        let rawKey = try raw.createObject([
            .class(.secretKey), .keyType(.genericSecret), .token(false), .sign(true), .value(SecretBytes([UInt8](repeating: 1, count: 32))),
        ])
        module.installFaultInjector(NextCallsFail(.sign, .argumentsBad))
        #expect(throws: PKCS11Error(function: .sign, returnValue: .argumentsBad)) { _ = try raw.sign(.sha256HMAC, key: rawKey, data: [1]) }
        #expect(throws: PKCS11Error(function: .signInit, returnValue: .operationActive)) { _ = try raw.sign(.sha256HMAC, key: rawKey, data: [1]) }
        try raw.close()

        // Through the pool (one worker, so the next caller would get the same session).
        let pool = try await startedPool(token, workers: 1, module: module)
        let known = KnownHMACKey()
        _ = try await pool.hmacSHA256(key: known.key, data: [0])
        module.installFaultInjector(NextCallsFail(.sign, .argumentsBad))
        do {
            _ = try await pool.hmacSHA256(key: known.key, data: [1])
            Issue.record("expected the injected failure")
        } catch let error as HSMError {
            guard case .operationFailed(let cause) = error else { Issue.record("got \(error)"); return }
            #expect(cause.returnValue == .argumentsBad)
            #expect(!error.isRetryable)
        }
        let data = message(1, 1)
        #expect(try await pool.hmacSHA256(key: known.key, data: data) == known.expected(data))
        module.installFaultInjector(nil)
        await pool.shutdown()
    }
}

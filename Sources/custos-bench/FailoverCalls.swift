import GRPCCore
import RPC
import Synchronization

/// The calls of the failover load, over health-checked round-robin clients: WhoAmI with the bench's API key,
/// and whole sessions ending in Verify or Enrol. A session's steps are writes: none is sent
/// twice (``RoundRobinClient`` retries only reads), so a failure mid-session fails the call.
struct FailoverCalls: Sendable {
    let clients: [GRPCClient<HealthCheckedTransport>]
    let tenant: String
    let tenantMetadata: Metadata
    let bearer: Metadata
    let options: CallOptions

    init(clients: [GRPCClient<HealthCheckedTransport>], tenant: String, apiKey: String, options: CallOptions) {
        self.clients = clients
        self.tenant = tenant
        var metadata = Metadata()
        metadata.addString(tenant, forKey: Authenticator.tenantMetadataKey)
        tenantMetadata = metadata
        var bearer = Metadata()
        bearer.addString("Bearer \(apiKey)", forKey: "authorization")
        self.bearer = bearer
        self.options = options
    }

    private func verification(_ caller: Int) -> Custos_V1_Verification.Client<HealthCheckedTransport> {
        Custos_V1_Verification.Client(wrapping: clients[caller % clients.count])
    }

    /// - Returns: the tenant the API key belongs to.
    func whoAmI(caller: Int) async throws -> String {
        try await Custos_V1_APIKeys.Client(wrapping: clients[caller % clients.count])
            .whoAmI(Custos_V1_WhoAmIRequest(), metadata: bearer, options: options).tenantID
    }

    /// A consented session for `subject`.
    private func session(caller: Int, subject: String) async throws -> String {
        let service = verification(caller)
        let created = try await service.createSession(.with { $0.subjectExternalID = subject }, metadata: tenantMetadata, options: options)
        let opened = try await service.openGateway(.with { $0.gatewayLink = created.gatewayLink }, metadata: tenantMetadata, options: options)
        _ = try await service.recordConsent(
            .with { $0.sessionID = opened.sessionID; $0.noticeVersion = opened.noticeVersion }, metadata: tenantMetadata, options: options
        )
        return opened.sessionID
    }

    /// - Returns: the subject reference Enrol answered.
    func enrol(caller: Int, subject: String, features: [Float]) async throws -> String {
        let session = try await session(caller: caller, subject: subject)
        return try await verification(caller).enrol(.with { $0.sessionID = session; $0.features = features }, metadata: tenantMetadata, options: options)
            .subjectReference
    }

    /// - Returns: the decision's colour.
    func verify(caller: Int, subject: String, features: [Float]) async throws -> Custos_V1_DecisionColor {
        let session = try await session(caller: caller, subject: subject)
        return try await verification(caller).verify(.with { $0.sessionID = session; $0.features = features }, metadata: tenantMetadata, options: options)
            .decision.color
    }
}

/// What the failover load saw, from concurrent callers.
final class FailoverTally: Sendable {
    struct Snapshot {
        let calls: Int
        let succeeded: Int
        let failed: [String: Int]
        /// Failed calls by kind and code ("Enrol unavailable").
        let failedByKind: [String: Int]
        let wrong: Int
        let byKind: [String: Int]
        let longestGapMilliseconds: Double
        /// Seconds from the load's start to the beginning of that gap.
        let longestGapStartSeconds: Double
        let recoveredAfterMilliseconds: Double
    }

    private struct State {
        var succeeded = 0
        var failed = [String: Int]()
        var failedByKind = [String: Int]()
        var wrong = 0
        var byKind = [String: Int]()
        var successes = [ContinuousClock.Instant]()
        var lastFailure: ContinuousClock.Instant?
        var fault: ContinuousClock.Instant?
        var acknowledged = [(String, Int)]()
    }

    private let state = Mutex(State())

    /// A call answered OK; `wrong` when the answer is not the known right one; `acknowledged`
    /// names an Enrol's subject (and its features' index) for the check afterwards.
    func record(_ kind: String, wrong: Bool, acknowledged: (String, Int)? = nil) {
        let now = ContinuousClock.now
        state.withLock {
            $0.succeeded += 1
            $0.byKind[kind, default: 0] += 1
            $0.successes.append(now)
            if wrong { $0.wrong += 1 }
            if let acknowledged { $0.acknowledged.append(acknowledged) }
        }
    }

    func fail(_ kind: String, code: String) {
        let now = ContinuousClock.now
        state.withLock {
            $0.failed[code, default: 0] += 1
            $0.failedByKind["\(kind) \(code)", default: 0] += 1
            $0.byKind[kind, default: 0] += 1
            $0.lastFailure = now
        }
    }

    var acknowledged: [(String, Int)] { state.withLock { $0.acknowledged } }

    /// The moment the fault was injected (recovery is measured from it).
    func markFault() {
        let now = ContinuousClock.now
        state.withLock { $0.fault = now }
    }

    /// The longest gap runs from the load's start to the first success, between successes, and
    /// from the last success to the end.
    func snapshot(start: ContinuousClock.Instant, end: ContinuousClock.Instant) -> Snapshot {
        state.withLock { state in
            var (longest, longestStart) = (Duration.zero, start)
            var previous = start
            for instant in state.successes.sorted() + [end] {
                if instant - previous > longest { (longest, longestStart) = (instant - previous, previous) }
                previous = instant
            }
            let fault = state.fault ?? end
            let recovered = state.lastFailure.map { $0 > fault ? $0 - fault : .zero } ?? .zero
            return Snapshot(
                calls: state.succeeded + state.failed.values.reduce(0, +), succeeded: state.succeeded, failed: state.failed, failedByKind: state.failedByKind, wrong: state.wrong,
                byKind: state.byKind, longestGapMilliseconds: BenchmarkLoop.microseconds(longest) / 1000,
                longestGapStartSeconds: BenchmarkLoop.microseconds(longestStart - start) / 1e6,
                recoveredAfterMilliseconds: BenchmarkLoop.microseconds(recovered) / 1000
            )
        }
    }
}

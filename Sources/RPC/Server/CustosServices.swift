public import Composition
public import Custody
import Foundation
public import GRPCCore
public import Logging
public import Verification

/// Settings of the served RPC that are not about sockets or certificates.
public struct RPCSettings: Sendable {
    /// The privacy notice candidates consent to (RecordConsent must name it).
    public var noticeVersion = "custos-notice-1"
    /// Subjects held in memory per tenant and biometric version for 1:N (the
    /// global memory limit bounds their sum).
    public var galleryCapacity = 1_000_000
    /// Bytes all tenants' 1:N galleries together may hold (default 1.5 GiB: 1.26M subjects).
    public var galleryMemoryLimit = VerificationService.defaultGalleryMemoryLimit
    /// How long a retired key version rests before two officers may destroy it.
    public var destructionWaitingPeriod: Duration = .seconds(7 * 86_400)
    /// Request messages larger than this are refused with RESOURCE_EXHAUSTED.
    public var maxRequestBytes = 64 * 1024
    /// 1:1 verifications one subject may have per window (RESOURCE_EXHAUSTED past it).
    public var verificationAttempts = VerificationAttemptLimit.default
    /// How long the authenticator reuses the certificate deny-list and a tenant's status while
    /// the cache-change listener is connected (other instances' changes arrive as notices).
    public var authenticationCacheLifetime: Duration = .seconds(2)

    public init() {}

    /// The part of these settings the verification graph is built with.
    public var verification: VerificationGraph.Settings {
        var settings = VerificationGraph.Settings()
        settings.galleryCapacity = galleryCapacity
        settings.galleryMemoryLimit = galleryMemoryLimit
        settings.verificationAttempts = verificationAttempts
        return settings
    }
}

/// Every service of the RPC over the runtime's verification graph (``CustosRuntime``, which
/// owns and shuts down the pieces): the handlers; the interceptors, outermost first —
/// authentication (which also turns every failure into its precise status and counts it), then
/// the size limit; the health registry; and the listeners that keep caches honest across
/// instances.
public struct CustosServices: Sendable {
    public let services: [any RegistrableRPCService]
    public let interceptors: [any ServerInterceptor]
    public let health: HealthStatusRegistry
    public let graph: VerificationGraph
    public let authenticator: Authenticator
    /// The keyring's rest since retirement, which the scheduled-destruction sweep applies too.
    let destructionWaitingPeriod: Duration
    /// Keeps ``health`` on whether the HSM answers.
    let healthMonitor: HSMHealthMonitor
    public var verification: VerificationService { graph.core }
    public var apiKeys: APIKeyService { graph.custody.apiKeys }
    public var keyring: TenantKeyring { graph.custody.keyring }
    public var flow: BiometricVerification { graph.flow }

    public init(_ graph: VerificationGraph, settings: RPCSettings = RPCSettings(), logger: Logger) {
        let custody = graph.custody
        let authenticator = Authenticator(
            apiKeys: custody.apiKeys, database: custody.database, changes: graph.changes, cacheLifetime: settings.authenticationCacheLifetime
        )
        let health = HealthStatusRegistry(statuses: [
            "": .serving, "custos.v1.Verification": .serving, "custos.v1.APIKeys": .serving,
            "custos.v1.Webhooks": .serving, "custos.v1.Admin": .serving,
        ])
        services = [
            VerificationHandler(flow: graph.flow, noticeVersion: settings.noticeVersion),
            APIKeysHandler(apiKeys: custody.apiKeys),
            WebhooksHandler(signer: custody.webhooks, keyring: custody.keyring, sessions: graph.sessions),
            AdminHandler(AdminHandler.Dependencies(
                webhooks: custody.webhooks, pool: custody.pool, keyring: custody.keyring, audit: custody.audit,
                apiKeys: custody.apiKeys, revocations: CertificateRevocations(database: custody.database, audit: custody.audit),
                approvals: graph.approvals, policies: graph.policies, rights: graph.rights,
                retention: graph.retention, authenticator: authenticator, destructionWaitingPeriod: settings.destructionWaitingPeriod,
                reseal: graph.reseal,
                offboarding: graph.offboarding,
                overlapEnds: graph.overlapEnds
            )),
            HealthService(registry: health, revocations: authenticator),
        ]
        interceptors = [
            AuthenticationInterceptor(authenticator: authenticator, logger: logger),
            RequestSizeLimit(maxBytes: settings.maxRequestBytes),
        ]
        self.health = health
        self.graph = graph
        self.authenticator = authenticator
        destructionWaitingPeriod = settings.destructionWaitingPeriod
        healthMonitor = HSMHealthMonitor(pool: custody.pool, health: health, logger: logger)
    }

    /// Completes or rolls back rotations a crash interrupted, then keeps the API-key revocation,
    /// gallery, key-state and cache-change listeners running until cancelled (``VerificationGraph/runBackground()``),
    /// with the sweeps that carry out scheduled key destructions and tenant offboardings once due,
    /// and the HSM probe behind the health status (``HSMHealthMonitor``).
    public func runBackground() async {
        let (graph, waitingPeriod) = (graph, destructionWaitingPeriod)
        let monitor = healthMonitor
        await withDiscardingTaskGroup { group in
            group.addTask { await monitor.run() }
            group.addTask { await graph.runBackground() }
            // Scheduled key destructions are carried out once due, without an officer.
            group.addTask { await graph.approvals.runScheduledDestructions(every: .seconds(60), waitingPeriod: waitingPeriod) }
            group.addTask { await graph.runOffboardingSweep(every: .seconds(60)) }
        }
    }
}

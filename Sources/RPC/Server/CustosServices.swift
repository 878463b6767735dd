public import Composition
public import Custody
import Foundation
public import GRPCCore
public import HSM
public import Logging
public import Storage
import Tokenization
public import Verification

/// Settings of the served RPC that are not about sockets or certificates.
public struct RPCSettings: Sendable {
    /// The privacy notice candidates consent to (RecordConsent must name it).
    public var noticeVersion = "custos-notice-1"
    /// Subjects held in memory per tenant and biometric version for 1:N.
    public var galleryCapacity = 100_000
    /// Bytes all tenants' 1:N galleries together may hold (default 1.5 GiB: 1.26M subjects).
    public var galleryMemoryLimit = VerificationService.defaultGalleryMemoryLimit
    /// How long a retired key version rests before two officers may destroy it.
    public var destructionWaitingPeriod: Duration = .seconds(7 * 86_400)
    /// Request messages larger than this are refused with RESOURCE_EXHAUSTED.
    public var maxRequestBytes = 64 * 1024
    /// 1:1 verifications one subject may have per window (RESOURCE_EXHAUSTED past it).
    public var verificationAttempts = VerificationAttemptLimit.default

    public init() {}
}

/// Every service of the RPC, composed over the custody pieces (which a caller owns and shuts
/// down): the handlers; the interceptors, outermost first — authentication (which also turns
/// every failure into its precise status and counts it), then the size limit; the health
/// registry; and the listeners that keep caches honest across instances.
public struct CustosServices: Sendable {
    public let services: [any RegistrableRPCService]
    public let interceptors: [any ServerInterceptor]
    public let health: HealthStatusRegistry
    public let verification: VerificationService
    public let apiKeys: APIKeyService
    public let keyring: TenantKeyring
    public let flow: BiometricVerification
    public let authenticator: Authenticator
    let logger: Logger

    public init(
        pool: SessionPool, database: Database, keyring: TenantKeyring, audit: AuditLog, apiKeys: APIKeyService,
        webhooks: WebhookSigner, settings: RPCSettings = RPCSettings(), logger: Logger
    ) {
        let recorder = AuditLogRecorder(audit)
        let sealer = CustodyPersonalDataSealer(pool: pool, keyring: keyring)
        let referencer = CustodySubjectReferencer(pool: pool, keyring: keyring)
        let policies = TenantPolicies(database: database, audit: recorder)
        let core = VerificationService(
            database: database, policies: policies, galleryCapacity: settings.galleryCapacity,
            galleryMemoryLimit: settings.galleryMemoryLimit, attemptLimit: settings.verificationAttempts, audit: recorder, logger: logger
        )
        let sessions = VerificationSessions(database: database, sealer: sealer, referencer: referencer)
        // The default budget applies until a tenant sets its own (TenantPolicy).
        let limiter = TokenizationRateLimiter(
            database: database, defaultBudget: TokenizationBudget(perMinute: TenantPolicy.default.tokenizationsPerMinute), audit: audit
        )
        let tokenizer = BiometricTokenizer(pool: pool, keyring: keyring, limiter: limiter)
        let flow = BiometricVerification(sessions: sessions, core: core, tokenizer: tokenizer)
        let rights = SubjectRights(database: database, core: core, sealer: sealer, referencer: referencer, audit: recorder)
        let retention = RetentionJob(database: database, core: core, audit: recorder)
        let approvals = KeyDestructionApprovals(database: database, keyring: keyring, audit: audit)
        let authenticator = Authenticator(apiKeys: apiKeys, database: database)
        let health = HealthStatusRegistry(statuses: [
            "": .serving, "custos.v1.Verification": .serving, "custos.v1.APIKeys": .serving,
            "custos.v1.Webhooks": .serving, "custos.v1.Admin": .serving,
        ])
        services = [
            VerificationHandler(flow: flow, noticeVersion: settings.noticeVersion),
            APIKeysHandler(apiKeys: apiKeys),
            WebhooksHandler(signer: webhooks, keyring: keyring, sessions: sessions),
            AdminHandler(AdminHandler.Dependencies(
                webhooks: webhooks, pool: pool, keyring: keyring, audit: audit, apiKeys: apiKeys,
                revocations: CertificateRevocations(database: database, audit: audit), approvals: approvals,
                policies: policies, rights: rights, retention: retention, authenticator: authenticator,
                destructionWaitingPeriod: settings.destructionWaitingPeriod
            )),
            HealthService(registry: health),
        ]
        interceptors = [
            AuthenticationInterceptor(authenticator: authenticator, logger: logger),
            RequestSizeLimit(maxBytes: settings.maxRequestBytes),
        ]
        self.health = health
        self.verification = core
        self.apiKeys = apiKeys
        self.keyring = keyring
        self.flow = flow
        self.authenticator = authenticator
        self.logger = logger
    }

    /// Completes or rolls back rotations a crash interrupted, then keeps the API-key revocation
    /// and gallery listeners running until cancelled.
    public func runBackground() async {
        do {
            let done = try await keyring.reconcile()
            if !done.isEmpty { logger.notice("reconciled interrupted key rotations", metadata: ["count": "\(done.count)"]) }
        } catch {
            logger.error("start-up reconciliation failed; run `custos key reconcile`", metadata: ["error": "\(error)"])
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await apiKeys.runRevocationListener() }
            group.addTask { await verification.runGalleryListener() }
        }
    }
}

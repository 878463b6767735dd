public import Custody
public import HSM
import Logging
public import Storage

/// The custody services over one pool and one database, assembled once: the root keys the
/// token holds, the audit log, the tenant keyring, API keys and webhook signing.
public struct CustodyGraph: Sendable {
    /// What the custody services need besides the pool and the database.
    public struct Settings: Sendable {
        /// Where the audit head anchor is written (beside config.json); `nil`: no file anchor.
        public var auditAnchorPath: String?
        /// `live` or `test`: the `<env>` part of issued API keys.
        public var keyEnvironment: String
        /// Live Ed25519 webhook key pairs (token objects) one tenant may hold.
        public var tokenObjectsPerTenant: Int
        /// For tests only: called at each step of a key rotation (crash injection).
        public var keyringStepHook: (@Sendable (TenantKeyring.KeyringStep) throws -> Void)?
        /// How often counted key uses are written to the audit log (``KeyUseRecorderService``,
        /// which also writes them at shutdown); `nil`: no recorder in the runtime (the test
        /// harnesses, whose suites count audit entries; they flush by hand).
        public var keyUseFlushInterval: Duration?
        /// Whether `v1a` webhook keys may be made; the runtime turns it off on a module without
        /// Ed25519 (``SelfTest``).
        public var ed25519Webhooks = true
        /// The escrow keys Ed25519 seeds may be sealed to (config.json's `webhookEscrowKeys`);
        /// empty: no `v1a` key is made.
        public var trustedEscrowKeys: Set<EscrowKeyFingerprint>
        /// How long an API key the HSM confirmed is accepted again without an HMAC
        /// (``APIKeyService/verifiedLifetime``; `.zero`: never).
        public var apiKeyVerifiedLifetime: Duration

        public init(
            auditAnchorPath: String?, keyEnvironment: String = "live",
            tokenObjectsPerTenant: Int = WebhookSigner.defaultTokenObjectLimit,
            keyringStepHook: (@Sendable (TenantKeyring.KeyringStep) throws -> Void)? = nil,
            keyUseFlushInterval: Duration? = nil, trustedEscrowKeys: Set<EscrowKeyFingerprint> = [],
            apiKeyVerifiedLifetime: Duration = APIKeyService.defaultVerifiedLifetime
        ) {
            self.auditAnchorPath = auditAnchorPath
            self.keyEnvironment = keyEnvironment
            self.tokenObjectsPerTenant = tokenObjectsPerTenant
            self.keyringStepHook = keyringStepHook
            self.keyUseFlushInterval = keyUseFlushInterval
            self.trustedEscrowKeys = trustedEscrowKeys
            self.apiKeyVerifiedLifetime = apiKeyVerifiedLifetime
        }
    }

    public let pool: SessionPool
    public let database: Database
    public let rootKeys: RootKeys
    public let audit: AuditLog
    public let keyring: TenantKeyring
    public let apiKeys: APIKeyService
    public let webhooks: WebhookSigner
    /// Writes the keyring's counted key uses to the audit log.
    public let keyUseRecorder: KeyUseRecorder

    // Internal, as is ``rootKeys(pool:database:verify:logger:)``: a graph is built only by
    // CustosRuntime, after the root-key check (or, for `ceremony rotate-root` alone, with
    // ``CustosRuntime/Options/verifyRootKeys`` off); public, they let RPC or an executable
    // assemble custody over root keys nobody checked.
    init(pool: SessionPool, database: Database, rootKeys: RootKeys, settings: Settings, logger: Logger) {
        self.pool = pool
        self.database = database
        self.rootKeys = rootKeys
        audit = AuditLog(pool: pool, database: database, rootKeys: rootKeys, anchorPath: settings.auditAnchorPath)
        keyring = TenantKeyring(
            pool: pool, database: database, rootKeys: rootKeys, audit: audit, logger: logger, keyringStepHook: settings.keyringStepHook
        )
        apiKeys = APIKeyService(
            pool: pool, database: database, keyring: keyring, audit: audit, environment: settings.keyEnvironment, logger: logger,
            verifiedLifetime: settings.apiKeyVerifiedLifetime
        )
        webhooks = WebhookSigner(
            pool: pool, keyring: keyring, audit: audit, trustedEscrowKeys: settings.trustedEscrowKeys,
            tokenObjectLimit: settings.tokenObjectsPerTenant, ed25519Available: settings.ed25519Webhooks
        )
        keyUseRecorder = KeyUseRecorder(counter: keyring.keyUses, audit: audit)
    }

    /// The root keys to use: the newest on the token, so that after a root-KEK rotation new
    /// tenant keys are wrapped under the new KEKs (older ones stay for rows that still name
    /// them).
    /// - Parameter verify: refuse a token whose root keys the database does not know
    ///   (``RootKeyCheck``); only the root-KEK ceremony, which migrates and records them, skips
    ///   it and reads the token as it is. With `verify`, the replica tokens are checked against
    ///   the first as well (``ReplicaRootKeyCheck``).
    static func rootKeys(pool: SessionPool, database: Database, verify: Bool, logger: Logger) async throws -> RootKeys {
        // Every replica token must hold the first token's root keys before any call can move to it.
        if verify { try await ReplicaRootKeyCheck.verify(pool) }
        let inventory = verify
            ? try await RootKeyCheck.verify(pool: pool, database: database, logger: logger)
            : try await RootKeyInventory.read(from: pool)
        return RootKeys(inventory: inventory)
    }
}

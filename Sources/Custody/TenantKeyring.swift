public import CustosModel
public import Foundation
public import HSM
public import Logging
import PKCS11
public import Storage
import Synchronization

/// The tenant key hierarchy (DESIGN §5): keys generated in the HSM, wrapped under the root KEK,
/// stored wrapped with a row MAC, unwrapped on first use into non-extractable session objects,
/// rotated crash-safely, retired and destroyed.
///
/// This file holds the state and the lookups (with their caches); each other job is an
/// extension in its own file: `+Tenants`, `+KeyMaterial` (making versions), `+Rotation`,
/// `+Reconciliation` (of interrupted rotations, at start-up), `+Destruction` (retire, destroy),
/// `+RootKEKRotation` (rewrap under a new root KEK), `+RootKEKAdoption` (a new root KEK set
/// while running), `+TokenObjects` (Ed25519 versions held on every token) and `+Escrow` (their
/// seeds escrowed to the custodians' escrow key; keys that live on one token only).
public final class TenantKeyring: Sendable {
    public static let wrapMechanism = "CKM_AES_KEY_WRAP_PAD"

    /// Steps between the committed steps of a rotation, a destruction or a root-KEK rewrap,
    /// where tests stop the process (``StepFault``).
    public enum KeyringStep: Sendable, Hashable, CustomStringConvertible {
        /// The new version is stored as `pending` and listed in `pending_rotations`.
        case pendingStored
        /// One purpose of a biometric rotation is active; the other may still be pending.
        case completed(KeyPurpose)
        /// A destruction is on the HSM's list of key states; its row and audit entry are not
        /// committed yet.
        case destructionAnchored
        /// A destruction's row and audit entry are committed; its token objects (Ed25519) are
        /// listed in `pending_token_destructions` and not destroyed yet.
        case destructionRecorded
        /// A destruction's token objects are gone and off the list; the caller (a scheduled
        /// destruction's execution) has not recorded it as carried out yet.
        case destructionTokenObjectsDestroyed
        /// One row of a root-KEK rewrap (of this purpose) is wrapped under the new KEK and sealed;
        /// nothing of it is written yet (another instance may still change the row).
        case rewrapRowSealed(KeyPurpose)
        /// One row of a root-KEK rewrap is committed under the new KEK (blob, KEK version, MAC
        /// and its `key.rewrap` audit entry together); the rest still name the old one.
        case rewrapRowStored
        /// Every row of one tenant is re-wrapped; other tenants' rows may not be yet.
        case rewrapTenantDone
        /// A new Ed25519 key pair is on every token, listed for destruction; its row is not
        /// stored yet.
        case tokenObjectImported

        /// The names crash tests arm: `rotation.pendingStored`, `rotation.completed.bio-seed`,
        /// `destruction.recorded`, `destruction.tokenObjectsDestroyed`, `rewrap.rowSealed`, `rewrap.rowStored`,
        /// `rewrap.tenantDone`, `webhook.ed25519.imported`.
        public var description: String {
            switch self {
            case .pendingStored: "rotation.pendingStored"
            case .completed(let purpose): "rotation.completed.\(purpose.rawValue)"
            case .destructionAnchored: "destruction.anchored"
            case .destructionRecorded: "destruction.recorded"
            case .destructionTokenObjectsDestroyed: "destruction.tokenObjectsDestroyed"
            case .rewrapRowSealed: "rewrap.rowSealed"
            case .rewrapRowStored: "rewrap.rowStored"
            case .rewrapTenantDone: "rewrap.tenantDone"
            case .tokenObjectImported: "webhook.ed25519.imported"
            }
        }
    }

    let pool: SessionPool
    let database: Database
    /// The root keys in use: the KEK version moves up when a root-KEK rotation recorded a newer
    /// set while this keyring was running (``adoptRecordedRootKEKs()``); the MAC key never changes.
    public var rootKeys: RootKeys { rootKeyState.withLock { $0 } }
    let rootKeyState: Mutex<RootKeys>
    let authenticator: KeyVersionAuthenticator
    let audit: AuditLog
    let logger: Logger
    let keyringStepHook: (@Sendable (KeyringStep) throws -> Void)?
    /// How long a version lookup is trusted before the database is asked again while the
    /// key-state listener is connected (it reports other instances' changes sooner); a rotation
    /// made by another instance is seen within this time.
    let activeCacheTTL: Duration
    /// The cache lifetime while the key-state listener is not connected (or not run, as in
    /// one-shot CLI commands): a version disabled by another instance is refused within it.
    static let unlistenedCacheTTL = Duration.milliseconds(500)
    /// Whether ``runKeyStateListener()`` holds a LISTEN connection: only then is a cached
    /// version trusted for ``activeCacheTTL``.
    private let listening = Atomic<Bool>(false)
    /// Bumped by every invalidation: a lookup that read the database before one stores nothing
    /// (it might hold the row from before the change that caused it).
    private let cacheGeneration = Mutex<UInt64>(0)
    /// Data-plane uses of this keyring's keys, counted for the audit log (``KeyUseRecorder``).
    public let keyUses = KeyUseCounter()
    /// The token format new `bio` versions get (``BiometricTokenFormat/default``; tests make
    /// versions of the older format to exercise the migration).
    public let biometricTokenFormat: BiometricTokenFormat
    private let cache = Mutex([String: (record: KeyVersionRecord, fetched: ContinuousClock.Instant)]())
    private let signingCache = Mutex([String: (records: [KeyVersionRecord], fetched: ContinuousClock.Instant)]())
    /// One database read per expired entry, however many callers find it expired at once.
    private let recordRefreshes = SingleFlight<String, KeyVersionRecord>()
    private let listRefreshes = SingleFlight<String, [KeyVersionRecord]>()
    /// The HSM's list of key states, checked on every fresh read of a row.
    let keyStateAnchor: KeyStateAnchor
    let anchoredStatesCache = Mutex<AnchoredStatesSnapshot?>(nil)
    let anchoredStatesRefreshes = SingleFlight<UInt64, AnchoredKeyStates>()

    public init(
        pool: SessionPool, database: Database, rootKeys: RootKeys = RootKeys(), audit: AuditLog, logger: Logger,
        activeCacheTTL: Duration = .seconds(5), keyringStepHook: (@Sendable (KeyringStep) throws -> Void)? = nil,
        biometricTokenFormat: BiometricTokenFormat = .default
    ) {
        self.pool = pool
        self.database = database
        rootKeyState = Mutex(rootKeys)
        authenticator = KeyVersionAuthenticator(rootKeys: rootKeys)
        self.audit = audit
        self.logger = logger
        self.activeCacheTTL = activeCacheTTL
        self.keyringStepHook = keyringStepHook
        keyStateAnchor = KeyStateAnchor(pool: pool, logIdentity: "\(database.configuration.database)/\(database.schema)")
        self.biometricTokenFormat = biometricTokenFormat
    }

    // MARK: Using keys

    /// The key of `purpose` for `tenant` — the active version, or `version` — ready for the pool.
    /// The first use in this process verifies the row MAC and unwraps the key in the HSM.
    /// - Throws: ``CustodyError``.
    public func key(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int? = nil) async throws -> (key: HSMKey, version: Int) {
        try await custody {
            let record = try await self.record(tenant, purpose, version: version)
            return (hsmKey(for: record), record.version)
        }
    }

    /// The stored row (cached for ``cacheLifetime``), refused while disabled or awaiting destruction.
    func record(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int?) async throws -> KeyVersionRecord {
        let cacheKey = "\(tenant.rawValue)/\(purpose.rawValue)/\(version.map(String.init) ?? "active")"
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[cacheKey] }), now - cached.fetched < cacheLifetime {
            return cached.record
        }
        let generation = cacheGeneration.withLock { $0 }
        // Callers that find the entry expired together wait for one read (of this generation).
        return try await recordRefreshes.run("\(cacheKey)#\(generation)") {
            try await self.freshRecord(tenant, purpose, version: version, cacheKey: cacheKey, generation: generation, now: now)
        }
    }

    /// ``record(_:_:version:)``'s database read and checks, cached unless an invalidation came
    /// in meanwhile.
    private func freshRecord(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int?, cacheKey: String, generation: UInt64, now: ContinuousClock.Instant
    ) async throws -> KeyVersionRecord {
        let records = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.versions(tenant, purpose, on: connection)
        }
        let found: KeyVersionRecord?
        if let version {
            found = records.first { $0.version == version }
            guard found != nil else { throw CustodyError.unknownKeyVersion(tenant, purpose, version) }
        } else {
            found = records.first { $0.state == .active }
            guard found != nil else { throw CustodyError.noActiveKey(tenant, purpose) }
        }
        let record = found!
        if record.state == .destroyed { throw CustodyError.keyDestroyed(tenant, purpose, record.version) }
        // The pool resolves (and MAC-checks) a version's handle once per generation, so the
        // flags that stop its use are checked against the row MAC here, on every fresh read: a
        // database write clearing `disabled_at` is refused as tampering, not obeyed.
        try await authenticator.verify(record, pool: pool)
        try Self.requireUsable(record)
        // A MAC-valid row may still be an old copy: the HSM's list of key states decides.
        try await requireAnchoredStateAllows(record)
        cacheGeneration.withLock { current in
            if current == generation { cache.withLock { $0[cacheKey] = (record, now) } }
        }
        return record
    }

    /// The generation ``invalidate(prefix:)`` bumps: caches stamped with an older one are stale.
    var currentCacheGeneration: UInt64 { cacheGeneration.withLock { $0 } }

    /// Throws unless `record` may be used now (neither disabled nor awaiting destruction).
    static func requireUsable(_ record: KeyVersionRecord) throws {
        if record.disabledAt != nil { throw CustodyError.keyDisabled(record.tenant, record.purpose, record.version) }
        if let due = record.destructionDueAt {
            throw CustodyError.keyDestructionScheduled(record.tenant, record.purpose, record.version, due: due)
        }
    }

    /// How long a looked-up version is reused: ``activeCacheTTL`` while the key-state listener
    /// would tell us of changes, much less while it cannot.
    var cacheLifetime: Duration {
        listening.load(ordering: .acquiring) ? activeCacheTTL : min(activeCacheTTL, Self.unlistenedCacheTTL)
    }

    /// Every version of every purpose (for listing; no key material, KCVs only).
    public func versions(_ tenant: TenantID) async throws -> [KeyVersionRecord] {
        try await custody {
            try await database.withTenant(tenant, context: "list key versions") { connection in
                try await KeyVersionStore.all(on: connection)
            }
        }
    }

    /// Versions of `purpose` usable for signing or encrypting now: the active one and any
    /// `retiring` one still inside its overlap window (newest first).
    public func signingVersions(_ tenant: TenantID, _ purpose: KeyPurpose, now: Date = Date()) async throws -> [KeyVersionRecord] {
        try await custody {
            let records = try await database.withTenant(tenant, context: "read key versions") { connection in
                try await KeyVersionStore.versions(tenant, purpose, on: connection)
            }
            let current = records.filter { record in
                record.state == .active || (record.state == .retiring && (record.retiringUntil.map { $0 > now } ?? false))
            }
            guard let active = current.first(where: { $0.state == .active }) else { throw CustodyError.noActiveKey(tenant, purpose) }
            // Disabled (or scheduled) versions sign nothing; their flags are MAC-checked, as
            // in ``record(_:_:version:)``, and the HSM's list has the last word.
            for record in current { try await authenticator.verify(record, pool: pool) }
            try Self.requireUsable(active)
            try await requireAnchoredStateAllows(active)
            let anchored = try await anchoredStates()
            return current.filter { record in
                record.isUsable && (try? anchored.requireUsable(KeyStateAnchor.Entry(record))) != nil
            }.sorted { $0.version > $1.version }
        }
    }

    /// ``signingVersions(_:_:now:)`` cached for ``cacheLifetime`` (the hot path of signing);
    /// empty when the tenant has no usable version of `purpose`.
    func cachedSigningVersions(_ tenant: TenantID, _ purpose: KeyPurpose) async throws -> [KeyVersionRecord] {
        let cacheKey = "\(tenant.rawValue)/\(purpose.rawValue)/signing"
        let now = ContinuousClock.now
        if let cached = signingCache.withLock({ $0[cacheKey] }), now - cached.fetched < cacheLifetime {
            let date = Date()
            return cached.records.filter { $0.state == .active || ($0.retiringUntil.map { $0 > date } ?? false) }
        }
        // "No usable version" is cached too: most tenants have no v1a key, and asking the
        // database about it on every signature cost 20 times the signature itself.
        let generation = cacheGeneration.withLock { $0 }
        return try await listRefreshes.run("\(cacheKey)#\(generation)") {
            let records: [KeyVersionRecord]
            do {
                records = try await self.signingVersions(tenant, purpose)
            } catch CustodyError.noActiveKey {
                records = []
            }
            self.cacheGeneration.withLock { current in
                if current == generation { self.signingCache.withLock { $0[cacheKey] = (records, now) } }
            }
            return records
        }
    }

    /// Every version of `purpose`, any state (no key material, KCVs only), cached for
    /// ``cacheLifetime`` and forgotten with the purpose's other entries: the subject references
    /// of every CreateSession need the tenant's `pii` versions, and reading them uncached made
    /// a second commit per session.
    public func cachedVersions(_ tenant: TenantID, _ purpose: KeyPurpose) async throws -> [KeyVersionRecord] {
        let cacheKey = "\(tenant.rawValue)/\(purpose.rawValue)/all"
        let now = ContinuousClock.now
        if let cached = signingCache.withLock({ $0[cacheKey] }), now - cached.fetched < cacheLifetime {
            return cached.records
        }
        let generation = cacheGeneration.withLock { $0 }
        return try await listRefreshes.run("\(cacheKey)#\(generation)") {
            let records = try await custody {
                try await self.database.withTenant(tenant, context: "read key versions") { connection in
                    try await KeyVersionStore.versions(tenant, purpose, on: connection)
                }
            }
            self.cacheGeneration.withLock { current in
                if current == generation { self.signingCache.withLock { $0[cacheKey] = (records, now) } }
            }
            return records
        }
    }

    func hsmKey(for record: KeyVersionRecord) -> HSMKey {
        let authenticator = self.authenticator
        let rootKeys = self.rootKeys
        if record.purpose == .webhookEd25519, let label = record.tokenLabel {
            // The row names the token object; its MAC is checked first, like every other row's.
            let object = HSMKey.tokenObject(label: label, class: .privateKey)
            return HSMKey(id: "tenant:\(record.tenant.rawValue)/\(record.purpose.rawValue)/v\(record.version)", resolveWith: { resolution in
                guard try authenticator.isAuthentic(record, session: resolution.operationSession, macKey: try resolution.tokenObject(rootKeys.mac)) else {
                    throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
                }
                return try resolution.tokenObject(object)
            })
        }
        return HSMKey(id: "tenant:\(record.tenant.rawValue)/\(record.purpose.rawValue)/v\(record.version)", resolveWith: { resolution in
            // Runs once per pool generation and again after each eviction: the root keys come
            // from the pool's cache, not C_FindObjects. The MAC check signs in the caller's
            // session, the unwrap (one call, nothing left active) in the persistent one.
            let session = resolution.session
            let macKey = try resolution.tokenObject(rootKeys.mac)
            guard try authenticator.isAuthentic(record, session: resolution.operationSession, macKey: macKey) else {
                throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
            }
            guard let usage = record.purpose.usage, let wrapped = record.wrappedKey else {
                throw CustodyError.keyDestroyed(record.tenant, record.purpose, record.version)
            }
            let kek = try resolution.tokenObject(rootKeys.kek(record.purpose, version: record.rootKEKVersion))
            do {
                // Exactly the KEK's unwrap template: the token refuses anything else.
                return try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: wrapped, template: KeyTemplate.tenantKeyUnwrapped(usage))
            } catch where HSMError.isUnwrapRefusal(error) {
                // A tampered blob or the wrong KEK answers CKR_GENERAL_ERROR on SoftHSM (DESIGN §4).
                throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
            }
        })
    }

    /// Forgets the cached versions of `purpose`, after a rotation, retirement or destruction.
    func invalidate(_ tenant: TenantID, _ purpose: KeyPurpose) {
        invalidate(prefix: "\(tenant.rawValue)/\(purpose.rawValue)/")
    }

    /// Forgets every cached version whose key starts with `prefix` (all of them for "").
    func invalidate(prefix: String) {
        cacheGeneration.withLock { $0 &+= 1 }
        cache.withLock { cache in
            for key in cache.keys where key.hasPrefix(prefix) { cache.removeValue(forKey: key) }
        }
        signingCache.withLock { cache in
            for key in cache.keys where key.hasPrefix(prefix) { cache.removeValue(forKey: key) }
        }
    }

    // MARK: Changes made by other instances

    /// Keeps a LISTEN connection on ``KeyVersionStore/stateChannel`` until cancelled,
    /// reconnecting with backoff: each notification forgets the cached versions it names, so a
    /// version disabled (or scheduled for destruction, or destroyed) by another instance is
    /// refused here as soon as the change commits. While it is down the cache lifetime drops to
    /// ``unlistenedCacheTTL``. The composition root runs it (`custos serve`).
    public func runKeyStateListener() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await database.listen(
                    channel: KeyVersionStore.stateChannel,
                    ready: { [self] in
                        invalidate(prefix: "")
                        listening.store(true, ordering: .releasing)
                    },
                    received: { [self] payload in
                        // `<tenant>/<purpose>`; anything else forgets everything.
                        let parts = payload.split(separator: "/", omittingEmptySubsequences: false)
                        invalidate(prefix: parts.count == 2 ? payload + "/" : "")
                    }
                )
            } catch {
                if !Task.isCancelled {
                    logger.warning("key-state listener lost; key versions are re-read every 0.5 s until it is back", metadata: ["error": "\(error)"])
                }
            }
            listening.store(false, ordering: .releasing)
            invalidate(prefix: "")
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// Whether the key-state listener is connected (so cached versions live ``activeCacheTTL``).
    public var isListeningForKeyStates: Bool { listening.load(ordering: .acquiring) }
}

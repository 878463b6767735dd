import Crypto
public import CustosModel
public import Foundation
public import HSM
public import Logging
public import SecureMemory
public import Storage
import Synchronization

/// API keys (DESIGN §7): issued from the HSM's RNG, shown once, stored only as an HMAC under the
/// tenant's `apikey-pepper` key computed in the HSM; verified without a database or HSM call
/// when the format or checksum is wrong; revoked everywhere within about a second through
/// PostgreSQL LISTEN/NOTIFY.
public final class APIKeyService: Sendable {
    let pool: SessionPool
    let database: Database
    public let keyring: TenantKeyring
    let audit: AuditLog
    let logger: Logger
    /// `live` or `test`, the `<env>` part of issued keys.
    public let environment: String

    /// Key rows by key id, used only while the revocation listener is connected: a revocation
    /// it might miss must never leave a stale "valid" row behind (fail closed).
    private let cache = Mutex(RowCache())
    private let listening = Atomic<Bool>(false)
    private let lastTouched = Mutex([String: ContinuousClock.Instant]())
    /// Test hook: runs after a key's row was read from the database, before it is cached.
    let rowReadHook: (@Sendable (_ keyID: String) async -> Void)?
    /// How long a key the HSM confirmed is accepted again without an HMAC (``RowCache/verified``).
    let verifiedLifetime: Duration
    /// Verifications answered from ``RowCache/verified`` (tests read it; no secret in it).
    private let verifiedHits = Atomic<UInt64>(0)

    /// The longest a verified key is trusted without asking the HSM again (the default of
    /// `verifiedLifetime`): short, because only revocations, tenant flushes and listener changes
    /// end an entry sooner.
    public static let defaultVerifiedLifetime = Duration.seconds(5)
    /// At most this many verified keys are remembered; past it, expired ones go first, then all.
    static let verifiedLimit = 4_096

    /// - Parameters:
    ///   - verifiedLifetime: how long a key the HSM confirmed is accepted again without an HMAC
    ///     (`.zero`: every verification runs the HMAC).
    ///   - rowReadHook: for tests only (interleaving a revocation with a read).
    public init(
        pool: SessionPool, database: Database, keyring: TenantKeyring, audit: AuditLog, environment: String = "live", logger: Logger,
        verifiedLifetime: Duration = APIKeyService.defaultVerifiedLifetime,
        rowReadHook: (@Sendable (_ keyID: String) async -> Void)? = nil
    ) {
        self.pool = pool
        self.database = database
        self.keyring = keyring
        self.audit = audit
        self.environment = environment
        self.logger = logger
        self.verifiedLifetime = verifiedLifetime
        self.rowReadHook = rowReadHook
    }

    /// The executor of the HSM pool that verifies keys: a task that starts there runs
    /// ``verify(_:)``'s HMAC without a hop (``SessionPool/withPreferredExecutor(_:)``).
    public var hsmExecutor: any TaskExecutor { pool.executor }

    /// Cached rows and a generation that every revocation notice, flush and listener change
    /// bumps. A row read while a notice arrives may predate the revocation it announces: it is
    /// cached only if the generation is still the one read before the database was asked.
    private struct RowCache {
        var generation: UInt64 = 0
        var rows = [String: APIKeyRecord]()
        /// Keys the HSM's HMAC confirmed, by SHA-256 of the whole presented key (never the key
        /// itself): for ``APIKeyService/verifiedLifetime``, a key presented again is accepted
        /// on its digest instead of a new HMAC — a thread hop to an HSM worker and back, which
        /// cost more than the rest of an API-key call (docs/benchmarks.md, "WhoAmI ÷ Ping").
        /// An entry names the row it was verified against (key id, tenant, stored hash, its
        /// format and pepper version, scopes, expiry): a re-hash or another row — a format-1 row
        /// written again with wider scopes, whose hash does not change — makes it useless.
        /// Forgotten with the rows.
        var verified = [SHA256.Digest: VerifiedKey]()

        /// Forgets `keyID`'s row and verified digests, or everything when `keyID` is nil.
        mutating func invalidate(_ keyID: String?) {
            generation &+= 1
            if let keyID {
                rows.removeValue(forKey: keyID)
                verified = verified.filter { $0.value.keyID != keyID }
            } else {
                rows.removeAll()
                verified.removeAll()
            }
        }

        mutating func store(_ record: APIKeyRecord, readUnder readGeneration: UInt64) {
            if generation == readGeneration { rows[record.keyID] = record }
        }

        /// Remembers a key the HSM just confirmed, unless a notice came since its row was read.
        mutating func storeVerified(_ digest: SHA256.Digest, _ key: VerifiedKey, readUnder readGeneration: UInt64, now: ContinuousClock.Instant) {
            guard generation == readGeneration else { return }
            if verified.count >= APIKeyService.verifiedLimit {
                verified = verified.filter { $0.value.until > now }
                if verified.count >= APIKeyService.verifiedLimit { verified.removeAll() }
            }
            verified[digest] = key
        }

        /// Whether `digest` was confirmed against exactly `record`, and not too long ago.
        func isVerified(_ digest: SHA256.Digest, against record: APIKeyRecord, now: ContinuousClock.Instant) -> Bool {
            guard let entry = verified[digest], entry.until > now else { return false }
            return entry.keyID == record.keyID && entry.tenant == record.tenant && entry.pepperVersion == record.pepperVersion
                && entry.hashFormat == record.hashFormat && entry.scopes == record.scopes && entry.expiresAt == record.expiresAt
                && constantTimeEqual(entry.hash, record.hash)
        }
    }

    /// What a verified digest was confirmed against, and until when it is trusted.
    private struct VerifiedKey {
        let keyID: String
        let tenant: TenantID
        let hash: [UInt8]
        let hashFormat: Int
        let pepperVersion: Int
        let scopes: [String]
        let expiresAt: Date?
        let until: ContinuousClock.Instant

        init(record: APIKeyRecord, until: ContinuousClock.Instant) {
            keyID = record.keyID
            tenant = record.tenant
            hash = record.hash
            hashFormat = record.hashFormat
            pepperVersion = record.pepperVersion
            scopes = record.scopes
            expiresAt = record.expiresAt
            self.until = until
        }
    }

    /// SHA-256 of the whole presented key: what ``RowCache/verified`` is keyed by.
    private static func digest(_ key: SecretBytes) -> SHA256.Digest {
        key.withUnsafeBytes { SHA256.hash(data: $0) }
    }

    /// Whether the key in `bearer` (the text after `Bearer `) was confirmed by the HSM within
    /// ``verifiedLifetime`` and nothing has invalidated it since: its verification will not need
    /// an HMAC, so its call need not start on an HSM worker (``hsmExecutor``). Only a hint —
    /// ``verify(_:)-(ParsedAPIKey)`` checks everything again.
    public func isRecentlyVerified(bearer: Substring.UTF8View) -> Bool {
        guard listening.load(ordering: .acquiring) else { return false }
        let found = bearer.withContiguousStorageIfAvailable { text -> SHA256.Digest in
            SHA256.hash(data: UnsafeRawBufferPointer(text))
        }
        guard let digest = found else { return false }
        let now = ContinuousClock.now
        return cache.withLock { $0.verified[digest].map { $0.until > now } ?? false }
    }

    /// How many verifications were answered from the verified-key cache (tests only).
    public var verifiedCacheHits: UInt64 { verifiedHits.load(ordering: .relaxed) }

    /// How many times the row cache was invalidated (revocation notices, flushes, listener
    /// changes): tests wait on it to know a notice has arrived.
    public var cacheGeneration: UInt64 { cache.withLock { $0.generation } }

    /// A key as issued: `key` is shown to the caller once and never stored.
    public struct Issued: Sendable {
        public let keyID: String
        public let key: SecretBytes
        public let tenant: TenantID
        public let scopes: [String]
        public let expiresAt: Date?
    }

    /// A key that verified.
    public struct Verified: Sendable, Equatable {
        public let tenant: TenantID
        public let keyID: String
        public let scopes: [String]
    }

    /// Issues a key for `tenant`.
    /// - Throws: ``CustodyError``.
    public func issue(tenant: TenantID, scopes: [String], label: String = "", expiresAt: Date? = nil, actor: String) async throws -> Issued {
        let expiresAt = APIKeyHashFormat.normalized(expiresAt)
        return try await custody {
            let (pepper, pepperVersion) = try await keyring.key(tenant, .apiKeyPepper)
            let keyIDBytes = try await pool.random(count: APIKeyFormat.keyIDByteCount)
            let secret = try await pool.randomSecret(count: APIKeyFormat.secretByteCount)
            let key = try APIKeyFormat.make(environment: environment, keyID: keyIDBytes, secret: secret)
            let parsed = try APIKeyFormat.parse(key)
            let format = APIKeyHashFormat.current
            let message = try APIKeyHashFormat.message(parsed.whole, tenant: tenant, scopes: scopes, expiresAt: expiresAt, format: format)
                .orThrow(APIKeyError.invalid)
            let hash = try await pool.hmacSHA256(key: pepper, data: message)
            let record = APIKeyRecord(
                keyID: parsed.keyID, tenant: tenant, hash: hash, pepperVersion: pepperVersion, scopes: scopes,
                label: label, expiresAt: expiresAt, hashFormat: format
            )
            // The key and its audit entry commit together: no issued key without its entry.
            let audit = audit
            let keyID = parsed.keyID
            try await database.withTenant(tenant, context: "issue API key") { connection in
                try await APIKeyStore.insert(record, on: connection)
                try await audit.append(
                    tenant: tenant, actor: actor, action: .apiKeyIssue, target: keyID,
                    details: ["scopes": scopes.joined(separator: " "), "pepper_version": "\(pepperVersion)"], on: connection
                )
            }
            return Issued(keyID: parsed.keyID, key: key, tenant: tenant, scopes: scopes, expiresAt: expiresAt)
        }
    }

    /// Verifies a presented key: parse and checksum (no I/O), row by key id, HMAC in the HSM
    /// with the row's pepper version, constant-time comparison. After a pepper rotation a key
    /// that verifies is re-hashed under the active version.
    /// - Throws: ``APIKeyError/invalid`` for unknown, revoked, expired or wrong keys alike;
    ///   ``APIKeyError/malformed(_:)`` for a key that fails its format or checksum;
    ///   ``CustodyError`` when the HSM or database is unavailable.
    public func verify(_ presented: SecretBytes) async throws -> Verified {
        let parsed: ParsedAPIKey
        do {
            parsed = try APIKeyFormat.parse(presented)
        } catch {
            throw APIKeyError.malformed(error)
        }
        return try await verify(parsed)
    }

    /// ``verify(_:)-(SecretBytes)`` for a key the caller has already parsed (the authenticator
    /// parses it once, for its environment check and this).
    ///
    /// While the revocation listener runs, a key the HSM confirmed less than
    /// ``verifiedLifetime`` ago against the same row is accepted on its SHA-256 digest without a
    /// new HMAC; the row, revocation, expiry and the pepper version's state are checked on every
    /// call all the same, and a revocation, tenant flush or listener change forgets the digest.
    public func verify(_ parsed: ParsedAPIKey) async throws -> Verified {
        try await custody {
            guard let (found, readGeneration) = try await row(keyID: parsed.keyID) else { throw APIKeyError.invalid }
            // The HSM's list too, on every call (cached as the list is): the row's tenant status
            // alone could be set back to active by the database's writer (helper-77).
            if try await keyring.isTenantDisabled(found.tenant) { throw APIKeyError.invalid }
            var record = found
            if record.revokedAt != nil { throw APIKeyError.invalid }
            if let expiry = record.expiresAt, expiry <= Date() { throw APIKeyError.invalid }
            let remember = listening.load(ordering: .acquiring) && verifiedLifetime > .zero
            let digest = remember ? Self.digest(parsed.whole) : nil
            let now = ContinuousClock.now
            let known = digest.map { digest in cache.withLock { $0.isVerified(digest, against: record, now: now) } } ?? false
            try await keyring.keyUses.counting(record.tenant, .apiKeyPepper, version: record.pepperVersion, .apiKeyVerify) {
                // Looked up on a cache hit too: a disabled or destroyed pepper version refuses the
                // key at once, as the HMAC path would.
                let (pepper, _) = try await keyring.key(record.tenant, .apiKeyPepper, version: record.pepperVersion)
                if known {
                    verifiedHits.add(1, ordering: .relaxed)
                    return
                }
                guard let message = APIKeyHashFormat.message(
                    parsed.whole, tenant: record.tenant, scopes: record.scopes, expiresAt: record.expiresAt, format: record.hashFormat
                ) else { throw APIKeyError.invalid }
                let hash = try await pool.hmacSHA256(key: pepper, data: message)
                guard constantTimeEqual(hash, record.hash) else { throw APIKeyError.invalid }
            }
            let (active, activeVersion) = try await keyring.key(record.tenant, .apiKeyPepper)
            if activeVersion == record.pepperVersion, !known, let digest {
                let entry = VerifiedKey(record: record, until: now + verifiedLifetime)
                cache.withLock { $0.storeVerified(digest, entry, readUnder: readGeneration, now: now) }
            }
            if activeVersion != record.pepperVersion {
                // In the row's own format: a format-1 key stays format 1 (unbound) until re-issued.
                guard let message = APIKeyHashFormat.message(
                    parsed.whole, tenant: record.tenant, scopes: record.scopes, expiresAt: record.expiresAt, format: record.hashFormat
                ) else { throw APIKeyError.invalid }
                record.hash = try await pool.hmacSHA256(key: active, data: message)
                record.pepperVersion = activeVersion
                let updated = record
                try await database.withTenant(record.tenant, context: "re-hash API key") { connection in
                    try await APIKeyStore.rehash(keyID: updated.keyID, hash: updated.hash, pepperVersion: updated.pepperVersion, on: connection)
                }
                // Only if no revocation notice came since the row was read (or it would undo it).
                if listening.load(ordering: .acquiring) { cache.withLock { $0.store(updated, readUnder: readGeneration) } }
            }
            try await touchIfDue(record)
            return Verified(tenant: record.tenant, keyID: record.keyID, scopes: record.scopes)
        }
    }

    /// Revokes a key of `tenant`; every instance stops accepting it once the notification
    /// arrives. Unknown keys and keys of other tenants answer `false` alike; a key of this
    /// tenant revoked before throws ``APIKeyError/alreadyRevoked(keyID:)``.
    public func revoke(tenant: TenantID, keyID: String, actor: String) async throws -> Bool {
        try await custody {
            let audit = audit
            // Forgotten here whatever the outcome (the notification tells the other instances).
            defer { cache.withLock { $0.invalidate(keyID) } }
            let revoked = try await database.withTenant(tenant, context: "revoke API key") { connection in
                let revoked = try await APIKeyStore.revoke(keyID: keyID, on: connection)
                if revoked {
                    try await audit.append(tenant: tenant, actor: actor, action: .apiKeyRevoke, target: keyID, details: [:], on: connection)
                } else if try await APIKeyStore.get(keyID: keyID, on: connection)?.revokedAt != nil {
                    // A retried revocation must not read as "no such key".
                    throw APIKeyError.alreadyRevoked(keyID: keyID)
                }
                return revoked
            }
            return revoked
        }
    }

    /// The tenant's keys (ids, scopes, dates — never a secret).
    public func list(tenant: TenantID) async throws -> [APIKeyRecord] {
        try await custody {
            try await database.withTenant(tenant, context: "list API keys") { connection in
                try await APIKeyStore.list(on: connection)
            }
        }
    }

    /// Live keys (neither revoked nor expired) hashed under an older `apikey-pepper` version than
    /// the active one: they re-hash when next presented, but one never presented keeps the old
    /// version referenced — officers ask its owner to rotate it.
    public func stale(tenant: TenantID, now: Date = Date()) async throws -> [APIKeyRecord] {
        let active = try await keyring.versions(tenant).filter { $0.purpose == .apiKeyPepper && $0.state == .active }.map(\.version).max()
        guard let active else { throw CustodyError.noActiveKey(tenant, .apiKeyPepper) }
        return try await list(tenant: tenant).filter { key in
            key.revokedAt == nil && (key.expiresAt.map { $0 > now } ?? true) && key.pepperVersion < active
        }
    }

    /// Keeps a LISTEN connection for revocations until cancelled, reconnecting with backoff.
    /// While it is down the cache is off and every verification reads the database.
    public func runRevocationListener() async {
        var backoff = Duration.milliseconds(100)
        while !Task.isCancelled {
            do {
                try await database.listen(
                    channel: APIKeyStore.revocationChannel,
                    ready: { [self] in
                        cache.withLock { $0.invalidate(nil) }
                        listening.store(true, ordering: .releasing)
                    },
                    received: { [self] keyID in
                        cache.withLock { $0.invalidate(keyID == "*" ? nil : keyID) }
                    }
                )
            } catch {
                if !Task.isCancelled {
                    logger.warning("API-key revocation listener lost; verifying against the database until it is back", metadata: ["error": "\(error)"])
                }
            }
            listening.store(false, ordering: .releasing)
            cache.withLock { $0.invalidate(nil) }
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(5))
        }
    }

    /// Whether the revocation listener is connected (and so the cache is in use).
    public var isListening: Bool { listening.load(ordering: .acquiring) }

    /// The key's row, from the cache or the database, with the cache generation read before it.
    private func row(keyID: String) async throws -> (record: APIKeyRecord, generation: UInt64)? {
        let useCache = listening.load(ordering: .acquiring)
        let (cached, generation) = cache.withLock { ($0.rows[keyID], $0.generation) }
        if useCache, let cached { return (cached, generation) }
        guard let (tenant, active) = try await database.withTransaction(context: "look up API key id", { connection in
            try await APIKeyStore.tenant(forKeyID: keyID, on: connection)
        }) else { return nil }
        // A disabled tenant's keys are refused like unknown ones.
        guard active else { return nil }
        let record = try await database.withTenant(tenant, context: "read API key") { connection in
            try await APIKeyStore.get(keyID: keyID, on: connection)
        }
        guard let record else { return nil }
        await rowReadHook?(keyID)
        if useCache { cache.withLock { $0.store(record, readUnder: generation) } }
        return (record, generation)
    }

    /// Records last use at most once a minute per key, so verification stays read-only.
    private func touchIfDue(_ record: APIKeyRecord) async throws {
        let now = ContinuousClock.now
        let due = lastTouched.withLock { touched -> Bool in
            if let last = touched[record.keyID], now - last < .seconds(60) { return false }
            touched[record.keyID] = now
            return true
        }
        guard due else { return }
        let keyID = record.keyID
        try await database.withTenant(record.tenant, context: "record API key use") { connection in
            try await APIKeyStore.touch(keyID: keyID, on: connection)
        }
    }
}

/// API-key failures a caller may see. `invalid` deliberately does not say whether the key is
/// unknown, revoked, expired or simply wrong.
public enum APIKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalid
    case malformed(APIKeyFormatError)
    /// Revoking a key revoked before (its id, public).
    case alreadyRevoked(keyID: String)

    public var description: String {
        switch self {
        case .invalid: "API key not valid"
        case .malformed(let error): "API key malformed: \(error)"
        case .alreadyRevoked(let keyID): "API key \(keyID) is already revoked"
        }
    }
}

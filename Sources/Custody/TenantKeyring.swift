public import CustosModel
public import Foundation
public import HSM
public import Logging
import PKCS11
import PostgresNIO
public import Storage
import Synchronization

/// The tenant key hierarchy (DESIGN §5): keys generated in the HSM, wrapped under the root KEK,
/// stored wrapped with a row MAC, unwrapped on first use into non-extractable session objects,
/// rotated crash-safely, retired and destroyed.
public final class TenantKeyring: Sendable {
    public static let wrapMechanism = "CKM_AES_KEY_WRAP_PAD"

    /// Rotation steps, for tests that inject a crash between them.
    public enum RotationStep: Sendable, Hashable {
        /// The new version is stored as `pending` and listed in `pending_rotations`.
        case pendingStored
    }

    let pool: SessionPool
    let database: Database
    public let rootKeys: RootKeys
    let authenticator: KeyVersionAuthenticator
    let audit: AuditLog
    let logger: Logger
    let rotationHook: (@Sendable (RotationStep) throws -> Void)?
    /// How long an active-version lookup is trusted before the database is asked again, so
    /// that a rotation made by another instance is seen within this time.
    let activeCacheTTL: Duration
    private let cache = Mutex([String: (record: KeyVersionRecord, fetched: ContinuousClock.Instant)]())
    private let signingCache = Mutex([String: (records: [KeyVersionRecord], fetched: ContinuousClock.Instant)]())

    public init(
        pool: SessionPool, database: Database, rootKeys: RootKeys = RootKeys(), audit: AuditLog, logger: Logger,
        activeCacheTTL: Duration = .seconds(5), rotationHook: (@Sendable (RotationStep) throws -> Void)? = nil
    ) {
        self.pool = pool
        self.database = database
        self.rootKeys = rootKeys
        authenticator = KeyVersionAuthenticator(rootKeys: rootKeys)
        self.audit = audit
        self.logger = logger
        self.activeCacheTTL = activeCacheTTL
        self.rotationHook = rotationHook
    }

    // MARK: Tenants

    /// Creates a tenant and version 1 of each of its keys, in one transaction.
    /// - Throws: ``CustodyError``; `.storage(.conflict)` when the label is taken.
    public func createTenant(label: String, actor: String) async throws -> TenantRecord {
        try await custody {
            let tenant = TenantID.random()
            var records = [KeyVersionRecord]()
            for purpose in KeyPurpose.createdWithTenant {
                records.append(try await makeVersion(tenant, purpose, version: 1, state: .active))
            }
            let stored = records
            let entry = AuditEntry(
                tenant: tenant, actor: actor, action: .tenantCreate, target: tenant.rawValue,
                details: ["label": label, "keys": stored.map { "\($0.purpose.rawValue)/v1 kcv=\(lowercaseHex($0.checkValue))" }.joined(separator: ",")]
            )
            let audit = audit
            return try await database.withTenant(tenant, context: "create tenant") { connection in
                let tenantRecord = try await TenantStore.insert(id: tenant, label: label, on: connection)
                for record in stored { try await KeyVersionStore.insert(record, on: connection) }
                try await entry.append(to: audit, on: connection)
                return tenantRecord
            }
        }
    }

    /// Disables or re-enables a tenant; its API keys stop (or start) verifying on every
    /// instance once the announcement arrives.
    /// - Returns: whether a tenant was changed.
    public func setTenantActive(_ tenant: TenantID, _ active: Bool, actor: String) async throws -> Bool {
        try await custody {
            let changed = try await database.withTransaction(context: "set tenant status") { connection in
                let rows = try await connection.query(
                    "UPDATE tenants SET status = \(active ? "active" : "disabled") WHERE id = \(tenant.rawValue)::uuid RETURNING id::text",
                    logger: Database.quiet
                )
                var changed = false
                for try await _ in rows { changed = true }
                if changed {
                    try await APIKeyStore.announceFlush(on: connection)
                    try await AuditEntry(tenant: tenant, actor: actor, action: active ? .tenantEnable : .tenantDisable, target: tenant.rawValue)
                        .append(to: self.audit, on: connection)
                }
                return changed
            }
            return changed
        }
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

    /// The stored row (cached for ``activeCacheTTL``).
    func record(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int?) async throws -> KeyVersionRecord {
        let cacheKey = "\(tenant.rawValue)/\(purpose.rawValue)/\(version.map(String.init) ?? "active")"
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[cacheKey] }), now - cached.fetched < activeCacheTTL {
            return cached.record
        }
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
        cache.withLock { $0[cacheKey] = (record, now) }
        return record
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
            let usable = records.filter { record in
                record.state == .active || (record.state == .retiring && (record.retiringUntil.map { $0 > now } ?? false))
            }
            guard usable.contains(where: { $0.state == .active }) else { throw CustodyError.noActiveKey(tenant, purpose) }
            return usable.sorted { $0.version > $1.version }
        }
    }

    /// ``signingVersions(_:_:now:)`` cached for ``activeCacheTTL`` (the hot path of signing);
    /// empty when the tenant has no usable version of `purpose`.
    func cachedSigningVersions(_ tenant: TenantID, _ purpose: KeyPurpose) async throws -> [KeyVersionRecord] {
        let cacheKey = "\(tenant.rawValue)/\(purpose.rawValue)/signing"
        let now = ContinuousClock.now
        if let cached = signingCache.withLock({ $0[cacheKey] }), now - cached.fetched < activeCacheTTL {
            let date = Date()
            return cached.records.filter { $0.state == .active || ($0.retiringUntil.map { $0 > date } ?? false) }
        }
        // "No usable version" is cached too: most tenants have no v1a key, and asking the
        // database about it on every signature cost 20 times the signature itself.
        let records: [KeyVersionRecord]
        do {
            records = try await signingVersions(tenant, purpose)
        } catch CustodyError.noActiveKey {
            records = []
        }
        signingCache.withLock { $0[cacheKey] = (records, now) }
        return records
    }

    func hsmKey(for record: KeyVersionRecord) -> HSMKey {
        let authenticator = self.authenticator
        let rootKeys = self.rootKeys
        if record.purpose == .webhookEd25519, let label = record.tokenLabel {
            // The row names the token object; its MAC is checked first, like every other row's.
            let object = HSMKey.tokenObject(label: label, class: .privateKey)
            return HSMKey(id: "tenant:\(record.tenant.rawValue)/\(record.purpose.rawValue)/v\(record.version)") { session in
                guard try authenticator.isAuthentic(record, session: session, macKey: try rootKeys.mac.resolve(in: session)) else {
                    throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
                }
                return try object.resolve(in: session)
            }
        }
        return HSMKey(id: "tenant:\(record.tenant.rawValue)/\(record.purpose.rawValue)/v\(record.version)") { session in
            // Runs in the pool's persistent session, once per pool generation.
            let macKey = try rootKeys.mac.resolve(in: session)
            guard try authenticator.isAuthentic(record, session: session, macKey: macKey) else {
                throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
            }
            guard let usage = record.purpose.usage, let wrapped = record.wrappedKey else {
                throw CustodyError.keyDestroyed(record.tenant, record.purpose, record.version)
            }
            let kek = try rootKeys.kek(record.purpose, version: record.rootKEKVersion).resolve(in: session)
            do {
                // Exactly the KEK's unwrap template: the token refuses anything else.
                return try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: wrapped, template: KeyTemplate.tenantKeyUnwrapped(usage))
            } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .caller || error.returnValue == .generalError {
                // A tampered blob or the wrong KEK answers CKR_GENERAL_ERROR on SoftHSM (DESIGN §4).
                throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
            }
        }
    }

    // MARK: Making versions

    /// New key material generated in the HSM, wrapped under the root KEK, its KCV read, the
    /// row sealed. The clear key never leaves the HSM and is destroyed once wrapped.
    func makeVersion(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState) async throws -> KeyVersionRecord {
        guard let usage = purpose.usage else { throw CustodyError.invalidTransition(tenant, purpose, version, from: .pending, to: state) }
        let kek = rootKeys.kek(purpose)
        let (wrapped, checkValue) = try await pool.withSession(.generate) { session in
            let kekHandle = try session.handle(for: kek)
            let key = try session.pkcs11.generateKey(KeyTemplate.generationMechanism(usage), template: KeyTemplate.tenantKeyForWrapping(usage))
            defer { try? session.pkcs11.destroyObject(key) }
            let checkValue = try session.pkcs11.attribute(.checkValue, of: key)
            return (try session.pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: kekHandle, key: key), checkValue)
        }
        return try await seal(tenant, purpose, version: version, state: state, wrapped: wrapped, checkValue: checkValue)
    }

    /// A version from known secret bytes (a webhook secret shown to the tenant once): imported
    /// into the HSM, wrapped, destroyed.
    func makeVersion(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState, importing secret: SecretBytes) async throws -> KeyVersionRecord {
        guard let usage = purpose.usage else { throw CustodyError.invalidTransition(tenant, purpose, version, from: .pending, to: state) }
        let kek = rootKeys.kek(purpose)
        let (wrapped, checkValue) = try await pool.withSession(.generate) { session in
            let kekHandle = try session.handle(for: kek)
            let key = try session.pkcs11.createObject(KeyTemplate.importedForWrapping(usage, value: secret))
            defer { try? session.pkcs11.destroyObject(key) }
            let checkValue = try session.pkcs11.attribute(.checkValue, of: key)
            return (try session.pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: kekHandle, key: key), checkValue)
        }
        return try await seal(tenant, purpose, version: version, state: state, wrapped: wrapped, checkValue: checkValue)
    }

    private func seal(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState, wrapped: [UInt8], checkValue: [UInt8]) async throws -> KeyVersionRecord {
        let record = KeyVersionRecord(
            tenant: tenant, purpose: purpose, version: version, state: state, wrappedKey: wrapped,
            wrapMechanism: Self.wrapMechanism, rootKEKVersion: rootKeys.kekVersion, checkValue: checkValue, rowMAC: [],
            activatedAt: state == .active ? .wholeSecondsNow : nil
        )
        return try await authenticator.sealed(record, pool: pool)
    }

    // MARK: Rotation

    /// Rotates `purpose`: a new version becomes active; the old one becomes `retiring` for
    /// `overlap` (still usable for signing, e.g. webhooks) or, with no overlap, `retired`
    /// (verify/decrypt only).
    ///
    /// Crash-safe in two committed steps: (1) the new version is stored `pending` and listed in
    /// `pending_rotations`; (2) one transaction retires the old version, activates the new one and
    /// clears the listing. A crash after (1) is completed by ``reconcile()``; the unique index
    /// on active versions makes two active versions impossible.
    @discardableResult
    public func rotate(_ tenant: TenantID, _ purpose: KeyPurpose, overlap: Duration = .zero, actor: String) async throws -> KeyVersionRecord {
        try await custody {
            let existing = try await database.withTenant(tenant, context: "read key versions") { connection in
                try await KeyVersionStore.versions(tenant, purpose, on: connection)
            }
            guard existing.contains(where: { $0.state == .active }) else { throw CustodyError.noActiveKey(tenant, purpose) }
            let next = (existing.map(\.version).max() ?? 0) + 1
            let pending = try await makeVersion(tenant, purpose, version: next, state: .pending)
            try await storePending(pending)
            try rotationHook?(.pendingStored)
            return try await complete(pending, overlap: overlap, entry: AuditEntry(
                tenant: tenant, actor: actor, action: .keyRotate, target: "\(purpose.rawValue)/v\(next)",
                details: ["kcv": lowercaseHex(pending.checkValue), "overlap_seconds": "\(overlap.components.seconds)"]
            ))
        }
    }

    func storePending(_ pending: KeyVersionRecord) async throws {
        try await database.withTenant(pending.tenant, context: "store pending key version") { connection in
            try await KeyVersionStore.insert(pending, on: connection)
            try await KeyVersionStore.markPending(pending.tenant, pending.purpose, version: pending.version, on: connection)
        }
    }

    /// Rotates `bio-seed` and `bio-prf` together: one biometric key version covers both
    /// (DESIGN §5), so tokens of version n are made with seed n and PRF n. If an earlier call was
    /// interrupted between the two, this brings the lagging one up instead of moving both.
    /// - Returns: the biometric version now active.
    @discardableResult
    public func rotateBiometric(_ tenant: TenantID, actor: String) async throws -> Int {
        try await custody {
            let seed = try await record(tenant, .bioSeed, version: nil).version
            let prf = try await record(tenant, .bioPRF, version: nil).version
            let target = seed == prf ? seed + 1 : max(seed, prf)
            for (purpose, active) in [(KeyPurpose.bioSeed, seed), (.bioPRF, prf)] where active < target {
                let rotated = try await rotate(tenant, purpose, actor: actor)
                guard rotated.version == target else {
                    throw CustodyError.invalidTransition(tenant, purpose, rotated.version, from: .pending, to: .active)
                }
            }
            return target
        }
    }

    /// Step (2) of a rotation: one transaction.
    /// - Parameter entry: the audit entry of the action, written in the same transaction.
    func complete(_ pending: KeyVersionRecord, overlap: Duration, entry: AuditEntry) async throws -> KeyVersionRecord {
        let tenant = pending.tenant, purpose = pending.purpose
        let current = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.versions(tenant, purpose, on: connection)
        }
        let now = Date.wholeSecondsNow
        var updates = [(record: KeyVersionRecord, expectedMAC: [UInt8])]()
        for var old in current where old.state == .active && old.version != pending.version {
            try await authenticator.verify(old, pool: pool)
            let expectedMAC = old.rowMAC
            if overlap > .zero {
                old.state = .retiring
                old.retiringUntil = now.addingTimeInterval(Double(overlap.components.seconds))
            } else {
                old.state = .retired
                old.retiringUntil = nil
            }
            old.retiredAt = old.retiredAt ?? now
            updates.append((try await authenticator.sealed(old, pool: pool), expectedMAC))
        }
        var activated = pending
        activated.state = .active
        activated.activatedAt = now
        activated = try await authenticator.sealed(activated, pool: pool)
        let oldVersions = updates
        let newVersion = activated
        let pendingMAC = pending.rowMAC
        try await database.withTenant(tenant, context: "activate key version") { connection in
            for old in oldVersions {
                guard try await KeyVersionStore.update(old.record, expectedMAC: old.expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, old.record.version)
                }
            }
            guard try await KeyVersionStore.update(newVersion, expectedMAC: pendingMAC, on: connection) else {
                throw CustodyError.changedConcurrently(tenant, purpose, newVersion.version)
            }
            try await KeyVersionStore.clearPending(tenant, purpose, on: connection)
            try await entry.append(to: self.audit, on: connection)
        }
        invalidate(tenant, purpose)
        return activated
    }

    /// What start-up reconciliation did with one interrupted rotation.
    public enum Reconciliation: Sendable, Equatable {
        case completed(TenantID, KeyPurpose, version: Int)
        case rolledBack(TenantID, KeyPurpose, version: Int)
    }

    /// Finishes or undoes every rotation interrupted by a crash: a pending version whose row
    /// MAC is intact is activated (its material is stored, nothing is lost); one that fails its
    /// check is deleted. Run at start-up.
    public func reconcile() async throws -> [Reconciliation] {
        try await custody {
            let pending = try await database.withTransaction(context: "list pending rotations") { connection in
                try await KeyVersionStore.pendingRotations(on: connection)
            }
            var actions = [Reconciliation]()
            for (tenant, purpose, version) in pending {
                let row = try await database.withTenant(tenant, context: "read pending key version") { connection in
                    try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
                }
                func entry(_ outcome: String) -> AuditEntry {
                    AuditEntry(tenant: tenant, actor: "custos", action: .keyReconcile, target: "\(purpose.rawValue)/v\(version)", details: ["outcome": outcome])
                }
                if let row, row.state == .pending, try await authenticator.mac(row, pool: pool) == row.rowMAC {
                    _ = try await complete(row, overlap: .zero, entry: entry("completed"))
                    actions.append(.completed(tenant, purpose, version: version))
                } else {
                    let rolledBack = entry("rolled back"), audit = audit
                    try await database.withTenant(tenant, context: "roll back pending key version") { connection in
                        if row?.state == .pending { try await KeyVersionStore.deletePending(tenant, purpose, version: version, on: connection) }
                        try await KeyVersionStore.clearPending(tenant, purpose, on: connection)
                        try await rolledBack.append(to: audit, on: connection)
                    }
                    // An Ed25519 version's key pair is a token object: without its row it would be orphaned.
                    if let row, row.state == .pending { await discardRolledBackTokenObjects(row) }
                    actions.append(.rolledBack(tenant, purpose, version: version))
                }
            }
            if !actions.isEmpty { logger.notice("reconciled interrupted rotations", metadata: ["count": "\(actions.count)"]) }
            return actions
        }
    }

    // MARK: Retire and destroy

    /// Ends a `retiring` version's overlap now: it may only verify or decrypt from here on.
    public func retire(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String) async throws {
        try await custody {
            var row = try await database.withTenant(tenant, context: "read key version") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            }.orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
            try await authenticator.verify(row, pool: pool)
            guard row.state == .retiring else {
                throw CustodyError.invalidTransition(tenant, purpose, version, from: row.state, to: .retired)
            }
            let expectedMAC = row.rowMAC
            row.state = .retired
            row.retiringUntil = nil
            let sealed = try await authenticator.sealed(row, pool: pool)
            let audit = audit
            try await database.withTenant(tenant, context: "retire key version") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                try await AuditEntry(tenant: tenant, actor: actor, action: .keyRetire, target: "\(purpose.rawValue)/v\(version)")
                    .append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
        }
    }

    /// Destroys a retired version's material (metadata and version number stay). Refused
    /// before `waitingPeriod` has passed since retirement, and while live data still needs it.
    public func destroy(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, waitingPeriod: Duration, actor: String) async throws {
        try await custody {
            let rows = try await database.withTenant(tenant, context: "read key versions") { connection in
                try await KeyVersionStore.versions(tenant, purpose, on: connection)
            }
            guard var row = rows.first(where: { $0.version == version }) else { throw CustodyError.unknownKeyVersion(tenant, purpose, version) }
            // The waiting period is read from the row: only a MAC-valid row is believed.
            try await authenticator.verify(row, pool: pool)
            let expectedMAC = row.rowMAC
            guard row.state == .retired else { throw CustodyError.invalidTransition(tenant, purpose, version, from: row.state, to: .destroyed) }
            let retiredAt = row.retiredAt ?? .distantFuture
            if Date().timeIntervalSince(retiredAt) < Double(waitingPeriod.components.seconds) {
                throw CustodyError.stillNeeded(tenant, purpose, version, reason: "retired less than \(waitingPeriod.components.seconds) s ago")
            }
            let references = try await self.references(tenant, purpose, version: version)
            if references > 0 {
                throw CustodyError.stillNeeded(tenant, purpose, version, reason: "\(references) stored values still use it; re-key them first")
            }
            let tokenLabel = purpose == .webhookEd25519 ? row.tokenLabel : nil
            row.state = .destroyed
            row.wrappedKey = nil
            row.tokenLabel = nil
            row.destroyedAt = .wholeSecondsNow
            let sealed = try await authenticator.sealed(row, pool: pool)
            let audit = audit, checkValue = row.checkValue
            // The row and its audit entry commit together, before the token objects go: a
            // failure in between leaves material that nothing can use any more (logged), never
            // a destroyed key without its entry.
            try await database.withTenant(tenant, context: "destroy key version") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                try await AuditEntry(tenant: tenant, actor: actor, action: .keyDestroy, target: "\(purpose.rawValue)/v\(version)", details: ["kcv": lowercaseHex(checkValue)])
                    .append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
            if let tokenLabel {
                do {
                    _ = try await pool.withPersistentSession { session in
                        for handle in try session.findObjects([.label(tokenLabel)], limit: 4) { try session.destroyObject(handle) }
                    }
                } catch {
                    logger.error("key version destroyed, but its token objects remain", metadata: [
                        "label": "\(tokenLabel)", "error": "\(error)",
                    ])
                    throw error
                }
            }
        }
    }

    /// How many stored values still need `version`: API-key hashes (pepper), enrolled tokens
    /// (both biometric keys: one version covers the pair), sealed names and emails (data), and
    /// stored subject references (pii). Webhook keys sign outgoing messages only: nothing
    /// stored depends on them.
    func references(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int) async throws -> Int {
        try await database.withTenant(tenant, context: "count references to a key version") { connection in
            switch purpose {
            case .apiKeyPepper:
                try await APIKeyStore.count(pepperVersion: version, on: connection)
            case .bioSeed, .bioPRF:
                try await TemplateStore.count(keyVersion: version, on: connection)
            case .data:
                try await SessionStore.count(dataKeyVersion: version, on: connection)
            case .pii:
                try await TemplateStore.count(piiVersion: version, on: connection)
                    + SessionStore.count(piiVersion: version, on: connection)
            case .webhook, .webhookEd25519:
                0
            }
        }
    }

    func invalidate(_ tenant: TenantID, _ purpose: KeyPurpose) {
        let prefix = "\(tenant.rawValue)/\(purpose.rawValue)/"
        cache.withLock { cache in
            for key in cache.keys where key.hasPrefix(prefix) { cache.removeValue(forKey: key) }
        }
        signingCache.withLock { cache in
            for key in cache.keys where key.hasPrefix(prefix) { cache.removeValue(forKey: key) }
        }
    }
}

/// Lower-case hex of bytes (check values, hashes, MACs in logs and audit details).
public func lowercaseHex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: out, as: UTF8.self)
}

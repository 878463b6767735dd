public import CustosModel
public import HSM
import PKCS11
public import Storage

extension TenantKeyring {
    /// What ``rewrapTenantKeys(toKEKVersion:unwrappingKey:acceptsFirstFormat:actor:)`` did.
    public struct RewrapReport: Sendable, Hashable, Codable {
        public let tenants: Int
        /// Versions wrapped again under the new root KEKs.
        public let rewrapped: Int
        /// Versions that already named the new root KEK version (an earlier, interrupted run).
        public let alreadyCurrent: Int
        /// Versions with no wrapped blob (destroyed, or Ed25519 token keys): nothing to re-wrap;
        /// their rows keep naming the old version.
        public let withoutBlob: Int
        /// Rows sealed in the first MAC format and sealed again in the current one (migration).
        public let resealed: Int
    }

    /// Re-wraps every tenant key version from the root KEK it names to root KEK version
    /// `newVersion` (root-KEK rotation, DESIGN §5 and §11).
    ///
    /// The token's KEKs never unwrap an extractable key, so the old KEKs come from
    /// `unwrappingKey(purpose, version)`: the old KEK rebuilt from its custodians' shares as a
    /// session-only ``KeyTemplate/rewrapKEK(value:usage:)`` (or, once, the permissive legacy KEK
    /// being migrated away). Per version: the row MAC is checked; the key is unwrapped into an
    /// extractable session object, wrapped under the new token KEK of its purpose, the new blob
    /// unwrapped once under it (with the pinned template) as a check, the objects destroyed, and
    /// the row updated — blob, KEK version and MAC together, compare-and-swap on the old MAC.
    ///
    /// Each row is consistent at every moment (its MAC names the KEK its blob is wrapped under),
    /// so a crash midway leaves a mix that works; running this again finishes the job.
    /// - Parameter acceptsFirstFormat: accept (and reseal) rows MAC'd in the first format:
    ///   for the migration off a legacy KEK only.
    /// - Throws: ``CustodyError``; ``CustodyError/rewrapKeyMissing(_:version:)`` before any row
    ///   changes when a version in use has no unwrapping key.
    public func rewrapTenantKeys(
        toKEKVersion newVersion: Int, unwrappingKey: @Sendable (KeyPurpose, Int) -> HSMKey?,
        acceptsFirstFormat: Bool = false, actor: String
    ) async throws -> RewrapReport {
        try await custody {
            let authenticator = KeyVersionAuthenticator(rootKeys: rootKeys, acceptsFirstFormat: acceptsFirstFormat)
            let plan = try await rewrapPlan()
            // Every old KEK the blobs need must be at hand before anything changes.
            try Self.check(plan, toKEKVersion: newVersion, unwrappingKey: unwrappingKey)
            var tally = RewrapTally()
            for (tenant, records) in plan {
                for record in records {
                    // A row another instance changed since the plan was read (a state change,
                    // which re-seals its MAC over the same blob) is read again and moved as it is
                    // now; one that keeps changing under every attempt stops the run (`--resume`).
                    var current: KeyVersionRecord? = record
                    var attempts = 0
                    while let row = current {
                        attempts += 1
                        guard let outcome = try await rewrapRow(
                            row, toKEKVersion: newVersion, unwrappingKey: unwrappingKey, authenticator: authenticator, actor: actor
                        ) else {
                            guard attempts < Self.rewrapAttemptsPerRow else {
                                throw CustodyError.changedConcurrently(row.tenant, row.purpose, row.version)
                            }
                            current = try await database.withTenant(tenant, context: "read key version again for re-wrap") { connection in
                                try await KeyVersionStore.get(tenant, row.purpose, version: row.version, on: connection)
                            }
                            continue
                        }
                        tally.add(outcome)
                        break
                    }
                }
                for purpose in KeyPurpose.allCases { invalidate(tenant, purpose) }
                try keyringStepHook?(.rewrapTenantDone)
            }
            return RewrapReport(
                tenants: plan.count, rewrapped: tally.rewrapped, alreadyCurrent: tally.alreadyCurrent, withoutBlob: tally.withoutBlob,
                resealed: tally.resealed
            )
        }
    }

    /// How often one row is read again when another instance changed it under the re-wrap.
    static let rewrapAttemptsPerRow = 3

    /// What the re-wrap did with one row.
    private struct RowOutcome {
        var rewrapped = false, alreadyCurrent = false, withoutBlob = false, resealed = false
    }

    private struct RewrapTally {
        var rewrapped = 0, alreadyCurrent = 0, withoutBlob = 0, resealed = 0

        mutating func add(_ outcome: RowOutcome) {
            if outcome.rewrapped { rewrapped += 1 }
            if outcome.alreadyCurrent { alreadyCurrent += 1 }
            if outcome.withoutBlob { withoutBlob += 1 }
            if outcome.resealed { resealed += 1 }
        }
    }

    /// Moves one row to root KEK version `newVersion` (and reseals a first-format MAC), its audit
    /// entry in the same transaction. `nil`: the row changed since it was read (nothing written).
    private func rewrapRow(
        _ record: KeyVersionRecord, toKEKVersion newVersion: Int, unwrappingKey: @Sendable (KeyPurpose, Int) -> HSMKey?,
        authenticator: KeyVersionAuthenticator, actor: String
    ) async throws -> RowOutcome? {
        var outcome = RowOutcome()
        let current = try await authenticator.mac(record, pool: pool) == record.rowMAC
        let authentic = current ? true : try await authenticator.isAuthentic(record, pool: pool)
        guard authentic else {
            throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
        }
        var moved = record
        if let wrapped = record.wrappedKey, let usage = record.purpose.usage, record.rootKEKVersion != newVersion {
            // Checked for the plan; a row read again could name another version.
            guard let oldKEK = unwrappingKey(record.purpose, record.rootKEKVersion) else {
                throw CustodyError.rewrapKeyMissing(record.purpose, version: record.rootKEKVersion)
            }
            let newKEK = rootKeys.kek(record.purpose, version: newVersion)
            let blob = try await rewrap(record, wrapped: wrapped, usage: usage, from: oldKEK, to: newKEK)
            // Every other field as it is: the MAC covers the disabled and scheduled-
            // destruction marks too, and the UPDATE leaves them in place.
            moved = KeyVersionRecord(
                tenant: record.tenant, purpose: record.purpose, version: record.version, state: record.state,
                wrappedKey: blob, wrapMechanism: record.wrapMechanism, rootKEKVersion: newVersion,
                checkValue: record.checkValue, publicKey: record.publicKey, tokenLabel: record.tokenLabel, rowMAC: [],
                retiringUntil: record.retiringUntil, activatedAt: record.activatedAt, retiredAt: record.retiredAt,
                destroyedAt: record.destroyedAt, createdAt: record.createdAt, disabledAt: record.disabledAt,
                destructionDueAt: record.destructionDueAt, tokenFormat: record.tokenFormat
            )
        } else {
            if record.wrappedKey == nil { outcome.withoutBlob = true } else { outcome.alreadyCurrent = true }
            if current { return outcome }
        }
        let sealed = try await authenticator.sealed(moved, pool: pool)
        try keyringStepHook?(.rewrapRowSealed(record.purpose))
        // The row and its audit entry commit together: a crash between two rows
        // leaves every moved row on record, and a resume records only what it moves.
        let entry = moved.rootKEKVersion == record.rootKEKVersion ? nil : AuditEntry(
            tenant: record.tenant, actor: actor, action: .keyRewrap, target: "\(record.purpose.rawValue)/v\(record.version)",
            details: ["fromRootKEK": "v\(record.rootKEKVersion)", "toRootKEK": "v\(newVersion)"]
        )
        let audit = audit
        let changed = try await database.withTenant(record.tenant, context: "re-wrap key version") { connection in
            guard try await KeyVersionStore.rewrap(sealed, expectedMAC: record.rowMAC, on: connection) else { return false }
            try await entry?.append(to: audit, on: connection)
            return true
        }
        guard changed else { return nil }
        outcome.rewrapped = entry != nil
        outcome.resealed = !current
        try keyringStepHook?(.rewrapRowStored)
        return outcome
    }

    /// Records the check values of the root keys labelled `labels` (the keys a ceremony just
    /// made) in `ownerDatabase` — this keyring's database, connected as the owner role (every
    /// root key on the first record).
    public func recordRootKeys(labels: Set<String>, in ownerDatabase: Database) async throws {
        try await custody { try await RootKeyCheck.record(try await RootKeyInventory.read(from: pool), labels: labels, in: ownerDatabase) }
    }

    /// Label → check value of every root key this keyring's database recorded.
    public func recordedRootKeys() async throws -> [String: [UInt8]] {
        try await RootKeyCheck.recorded(in: database)
    }

    /// Throws ``CustodyError/rewrapKeyMissing(_:version:)`` unless `unwrappingKey` covers every
    /// blob that does not name `newVersion` yet. Changes nothing.
    public func checkRewrapSources(toKEKVersion newVersion: Int, unwrappingKey: @Sendable (KeyPurpose, Int) -> HSMKey?) async throws {
        try await custody { try Self.check(try await rewrapPlan(), toKEKVersion: newVersion, unwrappingKey: unwrappingKey) }
    }

    private func rewrapPlan() async throws -> [(tenant: TenantID, records: [KeyVersionRecord])] {
        var plan = [(tenant: TenantID, records: [KeyVersionRecord])]()
        for tenant in try await TenantStore(database).list() {
            let records = try await database.withTenant(tenant.id, context: "read key versions for re-wrap") { connection in
                try await KeyVersionStore.all(on: connection)
            }
            plan.append((tenant.id, records))
        }
        return plan
    }

    private static func check(
        _ plan: [(tenant: TenantID, records: [KeyVersionRecord])], toKEKVersion newVersion: Int,
        unwrappingKey: @Sendable (KeyPurpose, Int) -> HSMKey?
    ) throws {
        for (_, records) in plan {
            for record in records where record.wrappedKey != nil && record.rootKEKVersion != newVersion {
                guard unwrappingKey(record.purpose, record.rootKEKVersion) != nil else {
                    throw CustodyError.rewrapKeyMissing(record.purpose, version: record.rootKEKVersion)
                }
            }
        }
    }

    /// One blob from `oldKEK` to `newKEK`, checked by unwrapping it under `newKEK` with the
    /// pinned template before any row points at it.
    private func rewrap(_ record: KeyVersionRecord, wrapped: [UInt8], usage: KeyUsage, from oldKEK: HSMKey, to newKEK: HSMKey) async throws -> [UInt8] {
        try await pool.withSession(.wrap) { session in
            let pkcs11 = session.pkcs11
            let key: ObjectHandle
            do {
                key = try pkcs11.unwrapKey(
                    .aesKeyWrapPad, unwrappingKey: session.handle(for: oldKEK), wrapped: wrapped,
                    template: KeyTemplate.tenantKeyForRewrapping(usage)
                )
            } catch where HSMError.isUnwrapRefusal(error) {
                throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
            }
            defer { try? pkcs11.destroyObject(key) }
            // SoftHSM 2.6.1 leaves CKA_CHECK_VALUE empty on unwrapped keys; where a token
            // reports one, it must be the row's.
            let checkValue = try pkcs11.attribute(.checkValue, of: key)
            guard checkValue.isEmpty || checkValue == record.checkValue else {
                throw CustodyError.cannotUnwrap(record.tenant, record.purpose, record.version)
            }
            let newKEKHandle = try session.handle(for: newKEK)
            let blob = try pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: newKEKHandle, key: key)
            let check = try pkcs11.unwrapKey(.aesKeyWrapPad, unwrappingKey: newKEKHandle, wrapped: blob, template: KeyTemplate.tenantKeyUnwrapped(usage))
            try? pkcs11.destroyObject(check)
            return blob
        }
    }
}

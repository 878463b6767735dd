public import CustosModel
import Foundation
import HSM
public import Storage

// Record MACs (migration 33): templates (``TemplateAuthenticator``) and verification sessions'
// subject and expiry, and consent and outcome (``SessionRecordAuthenticator``), under the root
// MAC key. Rows written
// before carry none; they count as written by Custos only until the HSM's list of key states
// says every record was sealed, after which a row without a MAC is as forged as one with a
// wrong MAC.
extension TenantKeyring {
    /// Rows sealed per transaction by ``sealUnsealedRecords(actor:)``. Its statements run one
    /// after another, one or two a row: 500 rows came near the 10 s operation timeout on a loaded
    /// machine (a test's 500 planted sessions, once).
    static let recordSealBatch = 100

    /// The MACs `records` carry (the newest root MAC key), in order, computed in one HSM round
    /// trip.
    /// - Throws: ``CustodyError``.
    public func seal(_ records: [SealableRecord], tenant: TenantID) async throws -> [RecordSeal] {
        try await custody {
            let rootKeys = rootKeys
            let macs = try await pool.hmacSHA256(records.map { (rootKeys.mac, Self.message($0, tenant: tenant)) })
            return macs.map { RecordSeal(mac: $0, macVersion: rootKeys.macVersion) }
        }
    }

    /// Whether every record, read with its seal, is as Custos wrote it: its MAC checks (all in
    /// one HSM round trip), or it has none and not every record has been sealed yet. A session
    /// that records nothing yet needs no MAC for its consent and outcome.
    /// - Throws: ``CustodyError`` (HSM trouble, an unreadable list of key states).
    public func areAuthentic(_ records: [(record: SealableRecord, seal: RecordSeal?)], tenant: TenantID) async throws -> Bool {
        try await custody {
            var sealed = [(message: [UInt8], seal: RecordSeal)]()
            var unsealed = false
            for (record, seal) in records {
                if case .session(let session) = record, seal == nil, !session.needsSeal { continue }
                if let seal { sealed.append((Self.message(record, tenant: tenant), seal)) } else { unsealed = true }
            }
            if unsealed, try await anchoredStates().recordsSealed { return false }
            guard !sealed.isEmpty else { return true }
            let expected: [[UInt8]]
            do {
                expected = try await pool.hmacSHA256(sealed.map { (RootKeys(macVersion: $0.seal.macVersion).mac, $0.message) })
            } catch HSMError.keyNotFound {
                // A MAC key version the token does not hold is a forged seal, not an HSM outage
                // (as audit entries: helper-75).
                return false
            }
            // Every comparison runs, whichever fails: the time does not say which record did.
            var authentic = true
            for (mac, item) in zip(expected, sealed) where !constantTimeEqual(mac, item.seal.mac) { authentic = false }
            return authentic
        }
    }

    static func message(_ record: SealableRecord, tenant: TenantID) -> [UInt8] {
        switch record {
        case .template(let template, let subject): TemplateAuthenticator.message(template, subject: subject, tenant: tenant)
        case .session(let session): SessionRecordAuthenticator.message(session, tenant: tenant)
        case .sessionSubject(let binding): SessionRecordAuthenticator.message(binding, tenant: tenant)
        }
    }

    private func seal(_ message: [UInt8]) async throws -> RecordSeal {
        let rootKeys = rootKeys
        return RecordSeal(mac: try await pool.hmacSHA256(key: rootKeys.mac, data: message), macVersion: rootKeys.macVersion)
    }

    /// At start (the verification graph's background work), when the list does not say every
    /// record is sealed: a database created with record MACs never held a row without one, so
    /// the mark goes on at once; one whose officer sealed its rows has the `records.seal` audit
    /// entry, so a list that lost the mark (rebuilt on a token restored from shares, or rewritten
    /// by an older build) gets it back. Otherwise the records an upgrade found stay trusted until
    /// an officer seals them (``sealUnsealedRecords(actor:)``) — never on the database's word
    /// alone, which its writer controls (helper-80: one planted row without a MAC held the mark
    /// off, and the sealing then gave it a genuine MAC).
    public func reconcileRecordSeals() async throws {
        try await custody {
            let created = try await database.withTransaction(context: "read record seal origin") { connection in
                try await RecordSealOrigin.createdWithRecordMACs(on: connection)
            }
            if try await anchoredStates(fresh: true).recordsSealed {
                // An upgraded database's mark must be restorable from its entry: a crash between
                // the list's write and the commit left the mark without one (helper-83).
                if !created, !(try await audit.hasAuthenticEntry(action: .recordsSeal)) {
                    try await markRecordsSealed(actor: "custos", details: ["reason": "list marked, entry missing"], evenIfMarked: true)
                }
                return
            }
            if created {
                try await markRecordsSealed(actor: "custos", details: ["reason": "created with record MACs"])
            } else if try await audit.hasAuthenticEntry(action: .recordsSeal) {
                try await markRecordsSealed(actor: "custos", details: ["reason": "sealed before (audit log)"])
            } else {
                logger.warning(
                    "templates and sessions written before record MACs are trusted until an officer seals them: once every instance runs this build, run `custos db seal-records`"
                )
            }
        }
    }

    /// What ``sealUnsealedRecords(actor:)`` did.
    public struct RecordSealing: Sendable, Equatable {
        public let templates: Int
        public let sessions: Int
        /// Tenants that still have a row without a MAC after the pass (written or changed
        /// meanwhile): the mark is not set while there is one.
        public let tenantsLeft: Int
        /// The list was marked already: nothing was sealed, and rows without a MAC
        /// (``tenantsLeft``) are forged.
        public let alreadySealed: Bool
        /// Templates without a MAC that were withdrawn (migration 34): put back by the database's
        /// writer after Custos deleted or replaced them; deleted again (in the `records.seal`
        /// entry's `templates_deleted`, and logged).
        public let templatesDeleted: Int
    }

    /// Seals every template and session without a MAC, trusting it as written by Custos (the
    /// rows an upgrade found), each only if its row is unchanged since it was read; then, if no
    /// tenant has a row without a MAC left, marks the list so that such a row is refused from
    /// then on. Run it once every instance runs this build. Idempotent. A pass reads every row
    /// once, in order, whatever it could not seal (helper-82: stopping at a batch of rows it could
    /// not seal left the rows behind it unsealed, and the mark then refused them).
    /// - Throws: ``CustodyError``.
    public func sealUnsealedRecords(actor: String) async throws -> RecordSealing {
        try await custody {
            // Once marked, a row without a MAC can only be the database writer's: sealing it
            // would make it genuine (helper-83). Count what is there instead.
            if try await anchoredStates(fresh: true).recordsSealed {
                var left = 0
                for tenant in try await TenantStore(database).list().map(\.id) where try await hasUnsealedRecords(tenant) { left += 1 }
                if left > 0 {
                    logger.error("rows without a MAC on a database whose records are all sealed: written by the database's writer; not sealed", metadata: [
                        "tenants": "\(left)",
                    ])
                }
                return RecordSealing(templates: 0, sessions: 0, tenantsLeft: left, alreadySealed: true, templatesDeleted: 0)
            }
            var templates = 0, sessions = 0, left = 0, deleted = 0
            for tenant in try await TenantStore(database).list().map(\.id) {
                let tenantTemplates = try await sealUnsealedTemplates(tenant)
                templates += tenantTemplates.sealed
                deleted += tenantTemplates.deleted
                sessions += try await sealUnsealedSessions(tenant)
                if try await hasUnsealedRecords(tenant) { left += 1 }
            }
            if left == 0 {
                try await markRecordsSealed(actor: actor, details: [
                    "templates": "\(templates)", "sessions": "\(sessions)", "templates_deleted": "\(deleted)",
                ])
            } else {
                logger.warning("rows without a MAC remain after sealing (written or changed meanwhile): the list is not marked; run the sealing again", metadata: [
                    "tenants": "\(left)",
                ])
            }
            return RecordSealing(templates: templates, sessions: sessions, tenantsLeft: left, alreadySealed: false, templatesDeleted: deleted)
        }
    }

    private func hasUnsealedRecords(_ tenant: TenantID) async throws -> Bool {
        try await database.withTenant(tenant, context: "look for unsealed records") { connection in
            if try await TemplateStore.hasUnsealed(on: connection) { return true }
            return try await SessionStore.hasUnsealed(on: connection)
        }
    }

    /// - Returns: the templates sealed, and those deleted as put back after their removal.
    private func sealUnsealedTemplates(_ tenant: TenantID) async throws -> (sealed: Int, deleted: Int) {
        var sealed = 0, deletedInAll = 0
        var after: (subject: String, keyVersion: Int)?
        while true {
            let cursor = after
            let batch = try await database.withTenant(tenant, context: "read unsealed templates") { connection in
                try await TemplateStore.unsealed(after: cursor, limit: Self.recordSealBatch, on: connection)
            }
            guard let last = batch.last else { return (sealed, deletedInAll) }
            after = (last.subject, last.template.keyVersion)
            var seals = [(TemplateStore.Unsealed, RecordSeal)]()
            for row in batch {
                seals.append((row, try await seal(TemplateAuthenticator.message(row.template, subject: row.subject, tenant: tenant))))
            }
            let made = seals
            let (done, deleted) = try await database.withTenant(tenant, context: "seal templates") { connection in
                var done = 0, deleted = 0
                for (row, seal) in made {
                    if try await TemplateStore.deleteIfWithdrawn(row, seal: seal, on: connection) {
                        deleted += 1
                    } else if try await TemplateStore.sealUnsealed(row, seal: seal, on: connection) {
                        done += 1
                    }
                }
                return (done, deleted)
            }
            sealed += done
            deletedInAll += deleted
            if deleted > 0 {
                logger.error("templates put back without their MAC after Custos removed them (their MAC is withdrawn): deleted again, not sealed", metadata: [
                    "tenant": "\(tenant)", "templates": "\(deleted)",
                ])
            }
        }
    }

    private func sealUnsealedSessions(_ tenant: TenantID) async throws -> Int {
        var sealed = 0
        var after: UUID?
        while true {
            let cursor = after
            let batch = try await database.withTenant(tenant, context: "read unsealed sessions") { connection in
                try await SessionStore.unsealed(after: cursor, limit: Self.recordSealBatch, on: connection)
            }
            guard let last = batch.last else { return sealed }
            after = last.row.id
            var seals = [(SessionStore.Unsealed, RecordSeal?, RecordSeal?)]()
            for unsealed in batch {
                let row = unsealed.row
                let record = row.seal == nil && row.record.needsSeal
                    ? try await seal(SessionRecordAuthenticator.message(row.record, tenant: tenant)) : nil
                let subject = row.subjectSeal == nil ? try await seal(SessionRecordAuthenticator.message(row.subjectBinding, tenant: tenant)) : nil
                seals.append((unsealed, record, subject))
            }
            let made = seals
            sealed += try await database.withTenant(tenant, context: "seal sessions") { connection in
                var done = 0
                for (unsealed, record, subject) in made
                where try await SessionStore.sealUnsealed(unsealed, record: record, subject: subject, on: connection) {
                    done += 1
                }
                return done
            }
        }
    }

    /// Puts the mark on the list, with its audit entry (what a list that loses the mark gets it
    /// back from) — one entry: an instance that finds the list marked meanwhile (two starting
    /// at once) writes none, unless `evenIfMarked` (the entry is what is missing).
    private func markRecordsSealed(actor: String, details: [String: String], evenIfMarked: Bool = false) async throws {
        let audit = audit
        try await database.withTransaction(context: "mark records sealed") { connection in
            // The list's lock, held to the commit (changeAnchoredStates takes it again).
            try await KeyStateAnchorStore.lock(on: connection)
            if !evenIfMarked, try await self.anchoredStates(fresh: true).recordsSealed { return }
            try await self.changeAnchoredStates(on: connection, scopedTo: nil, actor: actor) { $0.recordsSealed = true }
            try await AuditEntry(tenant: nil, actor: actor, action: .recordsSeal, target: "records", details: details).append(to: audit, on: connection)
        }
        invalidate(prefix: "")
    }
}

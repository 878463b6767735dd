public import CustosModel
import Foundation
import HSM
public import Storage

// Record MACs (migration 33): templates (``TemplateAuthenticator``) and verification sessions'
// consent and outcome (``SessionRecordAuthenticator``), under the root MAC key. Rows written
// before carry none; they count as written by Custos only until the HSM's list of key states
// says every record was sealed, after which a row without a MAC is as forged as one with a
// wrong MAC.
extension TenantKeyring {
    /// Rows sealed per transaction by ``sealUnsealedRecords(actor:)``.
    static let recordSealBatch = 500

    /// The MAC a template stored under `subject` carries (the newest root MAC key).
    /// - Throws: ``CustodyError``.
    public func sealTemplate(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> RecordSeal {
        try await custody { try await seal(TemplateAuthenticator.message(template, subject: subject, tenant: tenant)) }
    }

    /// Whether `template`, read from `subject`'s row, is one Custos wrote there: its MAC checks,
    /// or it has none and not every record has been sealed yet.
    /// - Throws: ``CustodyError`` (HSM trouble, an unreadable list of key states).
    public func isAuthenticTemplate(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool {
        try await custody { try await isAuthentic(TemplateAuthenticator.message(template, subject: subject, tenant: tenant), seal: template.seal) }
    }

    /// The MAC a session recording `record` carries.
    /// - Throws: ``CustodyError``.
    public func sealSession(_ record: SessionRecord, tenant: TenantID) async throws -> RecordSeal {
        try await custody { try await seal(SessionRecordAuthenticator.message(record, tenant: tenant)) }
    }

    /// Whether the session `record` was read from, with `seal`, records what Custos wrote: a
    /// row that records nothing yet needs no MAC.
    /// - Throws: ``CustodyError``.
    public func isAuthenticSession(_ record: SessionRecord, seal: RecordSeal?, tenant: TenantID) async throws -> Bool {
        guard record.needsSeal || seal != nil else { return true }
        return try await custody { try await isAuthentic(SessionRecordAuthenticator.message(record, tenant: tenant), seal: seal) }
    }

    /// The MAC binding a new session to its subject and expiry.
    /// - Throws: ``CustodyError``.
    public func sealSessionSubject(_ binding: SessionSubject, tenant: TenantID) async throws -> RecordSeal {
        try await custody { try await seal(SessionRecordAuthenticator.message(binding, tenant: tenant)) }
    }

    /// Whether a session row binding `binding` with `seal` is still the subject Custos created it for.
    /// - Throws: ``CustodyError``.
    public func isAuthenticSessionSubject(_ binding: SessionSubject, seal: RecordSeal?, tenant: TenantID) async throws -> Bool {
        try await custody { try await isAuthentic(SessionRecordAuthenticator.message(binding, tenant: tenant), seal: seal) }
    }

    private func seal(_ message: [UInt8]) async throws -> RecordSeal {
        let rootKeys = rootKeys
        return RecordSeal(mac: try await pool.hmacSHA256(key: rootKeys.mac, data: message), macVersion: rootKeys.macVersion)
    }

    /// A missing seal passes only before every record was sealed. A MAC key version the token
    /// does not hold is a forged seal, not an HSM outage (as audit entries: helper-75).
    private func isAuthentic(_ message: [UInt8], seal: RecordSeal?) async throws -> Bool {
        guard let seal else { return !(try await anchoredStates().recordsSealed) }
        let expected: [UInt8]
        do {
            expected = try await pool.hmacSHA256(key: RootKeys(macVersion: seal.macVersion).mac, data: message)
        } catch HSMError.keyNotFound {
            return false
        }
        return constantTimeEqual(expected, seal.mac)
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
            guard !(try await anchoredStates(fresh: true).recordsSealed) else { return }
            let created = try await database.withTransaction(context: "read record seal origin") { connection in
                try await RecordSealOrigin.createdWithRecordMACs(on: connection)
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

    /// Seals every template and session without a MAC, trusting it as written by Custos (the
    /// rows an upgrade found), then marks the list so that a record without a MAC is refused
    /// from then on. Run it once every instance runs this build. Idempotent; a row rewritten
    /// meanwhile keeps its writer's MAC.
    /// - Returns: the templates and sessions sealed.
    /// - Throws: ``CustodyError``.
    public func sealUnsealedRecords(actor: String) async throws -> (templates: Int, sessions: Int) {
        try await custody {
            var templates = 0, sessions = 0
            for tenant in try await TenantStore(database).list().map(\.id) {
                templates += try await sealUnsealedTemplates(tenant)
                sessions += try await sealUnsealedSessions(tenant)
            }
            try await markRecordsSealed(actor: actor, details: ["templates": "\(templates)", "sessions": "\(sessions)"])
            return (templates, sessions)
        }
    }

    private func sealUnsealedTemplates(_ tenant: TenantID) async throws -> Int {
        var sealed = 0
        while true {
            let batch = try await database.withTenant(tenant, context: "read unsealed templates") { connection in
                try await TemplateStore.unsealed(limit: Self.recordSealBatch, on: connection)
            }
            guard !batch.isEmpty else { return sealed }
            var seals = [(subject: String, template: StoredTemplate, seal: RecordSeal)]()
            for (subject, template) in batch {
                seals.append((subject, template, try await seal(TemplateAuthenticator.message(template, subject: subject, tenant: tenant))))
            }
            let made = seals
            let done = try await database.withTenant(tenant, context: "seal templates") { connection in
                var done = 0
                for (subject, template, seal) in made where try await TemplateStore.sealUnsealed(subject: subject, template: template, seal: seal, on: connection) {
                    done += 1
                }
                return done
            }
            sealed += done
            // Every row of the batch rewritten meanwhile: read again only if progress was made.
            if done == 0 { return sealed }
        }
    }

    private func sealUnsealedSessions(_ tenant: TenantID) async throws -> Int {
        var sealed = 0
        while true {
            let batch = try await database.withTenant(tenant, context: "read unsealed sessions") { connection in
                try await SessionStore.unsealed(limit: Self.recordSealBatch, on: connection)
            }
            guard !batch.isEmpty else { return sealed }
            var seals = [(row: SessionStore.Row, record: RecordSeal?, subject: RecordSeal?)]()
            for row in batch {
                let record = row.seal == nil && row.record.needsSeal
                    ? try await seal(SessionRecordAuthenticator.message(row.record, tenant: tenant)) : nil
                let subject = row.subjectSeal == nil ? try await seal(SessionRecordAuthenticator.message(row.subjectBinding, tenant: tenant)) : nil
                seals.append((row, record, subject))
            }
            let made = seals
            let done = try await database.withTenant(tenant, context: "seal sessions") { connection in
                var done = 0
                for (row, record, subject) in made {
                    var sealed = false
                    if let record, try await SessionStore.sealUnsealed(row.record, seal: record, on: connection) { sealed = true }
                    if let subject, try await SessionStore.sealUnsealed(row.subjectBinding, seal: subject, on: connection) { sealed = true }
                    if sealed { done += 1 }
                }
                return done
            }
            sealed += done
            if done == 0 { return sealed }
        }
    }

    /// Puts the mark on the list, with its audit entry (what a list that loses the mark gets it
    /// back from).
    private func markRecordsSealed(actor: String, details: [String: String]) async throws {
        let audit = audit
        try await database.withTransaction(context: "mark records sealed") { connection in
            try await self.changeAnchoredStates(on: connection, scopedTo: nil, actor: actor) { $0.recordsSealed = true }
            try await AuditEntry(tenant: nil, actor: actor, action: .recordsSeal, target: "records", details: details).append(to: audit, on: connection)
        }
        invalidate(prefix: "")
    }
}

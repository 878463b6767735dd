public import CustosModel
public import Foundation
public import Storage

/// A data subject's rights (GDPR Art. 15, 17, 20; DESIGN §9): export everything held about one
/// subject, decrypted for the tenant that holds it; erase it all, recorded in the audit log
/// without the erased data.
public final class SubjectRights: Sendable {
    let database: Database
    let core: VerificationService
    let sealer: any PersonalDataSealing
    let referencer: any SubjectReferencing
    let audit: any AuditRecording
    let now: @Sendable () -> Date

    public init(
        database: Database, core: VerificationService, sealer: any PersonalDataSealing, referencer: any SubjectReferencing,
        audit: any AuditRecording, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.database = database
        self.core = core
        self.sealer = sealer
        self.referencer = referencer
        self.audit = audit
        self.now = now
    }

    /// Everything held about the subject the tenant knows as `externalID`, in one piece.
    public func export(tenant: TenantID, externalID: PersonalText, actor: String) async throws -> SubjectExport {
        try await export(tenant: tenant, externalID: externalID, actor: actor, paging: nil).export
    }

    /// One page of the export: the subject's templates and one page of its sessions. Each page
    /// is audited, since each discloses the subject's data.
    public func export(tenant: TenantID, externalID: PersonalText, actor: String, paging: SubjectExportPaging) async throws -> SubjectExport.Page {
        try await export(tenant: tenant, externalID: externalID, actor: actor, paging: Optional(paging))
    }

    private func export(tenant: TenantID, externalID: PersonalText, actor: String, paging: SubjectExportPaging?) async throws -> SubjectExport.Page {
        try VerificationSessions.check(externalID, field: "external_id", maxBytes: 256, required: true)
        let found = try await referencer.references(for: externalID, tenant: tenant)
        let references = found.map(\.value)
        let (templates, sessions, next, completed) = try await database.withTenant(tenant, context: "export subject") { connection in
            // A lookup by external id: the subject's references move to the active pii version
            // first, so the export shows them as they are stored from now on.
            _ = try await SubjectReferenceMigration.moveToActive(found, tenant: tenant, seals: self.core.recordSeals, on: connection)
            let templates = try await TemplateStore.metadata(subjects: references, on: connection)
            let (rows, next): ([SessionStore.Row], SessionStore.Position?)
            if let paging {
                (rows, next) = try await SessionStore.bySubjects(references, after: paging.after, limit: paging.size, on: connection)
            } else {
                (rows, next) = (try await SessionStore.bySubjects(references, on: connection), nil)
            }
            // Completions the rows no longer show (an outcome cleared by the database's writer).
            let completed = try await SessionStore.completed(rows.filter { $0.outcome == nil }.map(\.id), on: connection)
            return (templates, rows, next, completed)
        }
        let at = now()
        var exported = [SubjectExport.Session]()
        for row in sessions {
            // An export states what Custos recorded: a consent or outcome it did not stops it.
            try await core.recordSeals.requireAuthentic(row, tenant: tenant)
            if completed.contains(row.id) { throw RecordIntegrityError.session(row.id) }
            var name: String?
            var email: String?
            if let version = row.dataKeyVersion {
                if let sealed = row.sealedName {
                    name = try await sealer.open(sealed, keyVersion: version, tenant: tenant, context: VerificationSessions.sealingContext(tenant, row.id, "name")).value
                }
                if let sealed = row.sealedEmail {
                    email = try await sealer.open(sealed, keyVersion: version, tenant: tenant, context: VerificationSessions.sealingContext(tenant, row.id, "email")).value
                }
            }
            let status = SessionStatus(row, now: at)
            exported.append(SubjectExport.Session(
                id: row.id.uuidString.lowercased(), state: status.state.rawValue, createdAt: row.createdAt, expiresAt: row.expiresAt,
                candidateName: name, candidateEmail: email, dataKeyVersion: row.dataKeyVersion,
                consent: row.consentedAt.map { SubjectExport.Consent(noticeVersion: row.noticeVersion ?? "", at: $0) },
                outcome: row.outcome, confidence: row.confidence, biometricKeyVersion: row.biometricKeyVersion, completedAt: row.completedAt
            ))
        }
        var details = ["templates": "\(templates.count)", "sessions": "\(sessions.count)"]
        if let paging {
            details["page"] = paging.after == nil ? "first" : "next"
            details["more"] = next == nil ? "no" : "yes"
        }
        try await audit.record(tenant: tenant, actor: actor, action: .subjectExport, target: "subject", details: details)
        let export = SubjectExport(
            tenant: tenant.rawValue, exportedAt: at, subjectReferences: Array(Set(templates.map(\.subject) + sessions.map(\.subject.value))).sorted(),
            biometricTemplates: templates.map { SubjectExport.Template(keyVersion: $0.keyVersion, enrolledAt: $0.enrolledAt, lastUsedAt: $0.lastUsedAt) },
            sessions: exported
        )
        return SubjectExport.Page(export: export, nextPageToken: next.map(SubjectExportPaging.token))
    }

    /// Erases the subject's fingerprints and sessions (their gateway links with them), then
    /// records the erasure — counts only — in the audit log.
    public func erase(tenant: TenantID, externalID: PersonalText, actor: String) async throws -> ErasureCounts {
        try VerificationSessions.check(externalID, field: "external_id", maxBytes: 256, required: true)
        let references = try await referencer.references(for: externalID, tenant: tenant).map(\.value)
        let notices = references.map { core.galleryChange(tenant, .erased, subject: $0) }
        let audit = audit
        // The erasure and its audit entry commit together: nothing erased without a record.
        let counts = try await database.withTenant(tenant, context: "erase subject") { connection in
            // A call that already holds one of the subject's sessions may be about to write a
            // template: wait for it, so the deletes below see what it wrote.
            try await TemplateStore.lockSubjectsForErasure(references, tenant: tenant, on: connection)
            let templates = try await TemplateStore.delete(subjects: references, on: connection)
            let sessions = try await SessionStore.delete(subjects: references, on: connection)
            // The attempt counters name the subject too.
            try await VerificationAttemptStore.delete(subjects: references, on: connection)
            for notice in notices { try await TemplateStore.notify(notice, on: connection) }
            try await audit.record(tenant: tenant, actor: actor, action: .subjectErase, target: "subject", details: [
                "templates": "\(templates)", "sessions": "\(sessions)",
            ], on: connection)
            return ErasureCounts(templates: templates, sessions: sessions)
        }
        core.galleryRemove(tenant, references)
        return counts
    }
}

public struct ErasureCounts: Sendable, Hashable, Codable {
    public let templates: Int
    public let sessions: Int

    public init(templates: Int, sessions: Int) {
        self.templates = templates
        self.sessions = sessions
    }
}

/// An Art. 15/20 export, as JSON (``json()``): what is held, decrypted for the tenant, with no
/// secret values — templates appear as metadata, because only keyed one-way tokens are held.
public struct SubjectExport: Sendable, Codable, Hashable {
    public struct Template: Sendable, Codable, Hashable {
        public let keyVersion: Int
        public let enrolledAt: Date
        public let lastUsedAt: Date
    }

    public struct Consent: Sendable, Codable, Hashable {
        public let noticeVersion: String
        public let at: Date
    }

    public struct Session: Sendable, Codable, Hashable {
        public let id: String
        public let state: String
        public let createdAt: Date
        public let expiresAt: Date
        public let candidateName: String?
        public let candidateEmail: String?
        public let dataKeyVersion: Int?
        public let consent: Consent?
        public let outcome: String?
        public let confidence: String?
        public let biometricKeyVersion: Int?
        public let completedAt: Date?
    }

    public let tenant: String
    public let exportedAt: Date
    public let subjectReferences: [String]
    public let biometricTemplates: [Template]
    public let sessions: [Session]
    public var templatesNote: String {
        "Face templates are held only as keyed one-way tokens (Index-of-Max hashes under an HSM key); no image or feature vector is stored, and a token cannot be turned back into one."
    }

    // Snake case comes from the coders' key strategies (``json()``, ``init(json:)``), so these
    // stay camel case: a raw value in snake case would not survive `convertFromSnakeCase`.
    enum CodingKeys: String, CodingKey {
        case tenant, exportedAt, subjectReferences, biometricTemplates, sessions, templatesNote
    }

    public init(tenant: String, exportedAt: Date, subjectReferences: [String], biometricTemplates: [Template], sessions: [Session]) {
        self.tenant = tenant
        self.exportedAt = exportedAt
        self.subjectReferences = subjectReferences
        self.biometricTemplates = biometricTemplates
        self.sessions = sessions
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tenant = try container.decode(String.self, forKey: .tenant)
        exportedAt = try container.decode(Date.self, forKey: .exportedAt)
        subjectReferences = try container.decode([String].self, forKey: .subjectReferences)
        biometricTemplates = try container.decode([Template].self, forKey: .biometricTemplates)
        sessions = try container.decode([Session].self, forKey: .sessions)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(tenant, forKey: .tenant)
        try container.encode(exportedAt, forKey: .exportedAt)
        try container.encode(subjectReferences, forKey: .subjectReferences)
        try container.encode(biometricTemplates, forKey: .biometricTemplates)
        try container.encode(sessions, forKey: .sessions)
        try container.encode(templatesNote, forKey: .templatesNote)
    }

    /// One page of an export, and the token of the next when more sessions follow.
    public struct Page: Sendable, Hashable {
        public let export: SubjectExport
        public let nextPageToken: String?
    }

    /// Machine-readable (Art. 20): snake_case keys, ISO 8601 times, stable key order.
    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    /// Reads what ``json()`` wrote.
    public init(json: Data) throws {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        self = try decoder.decode(Self.self, from: json)
    }
}

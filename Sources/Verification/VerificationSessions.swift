public import CustosModel
public import Foundation
public import Storage

/// Verification sessions (DESIGN §9): a front-end creates one for a candidate; the candidate
/// opens a single-use gateway link (valid 24 h) and consents (notice version, time); only then
/// may features be processed; the outcome is written once; the tenant reads the status.
public final class VerificationSessions: Sendable {
    let database: Database
    let sealer: any PersonalDataSealing
    let referencer: any SubjectReferencing
    /// Consents are sealed as they are recorded and checked before anything relies on them;
    /// moving a subject to the active pii reference seals its templates again under it.
    let recordSeals: any RecordSealing
    let now: @Sendable () -> Date
    public let lifetime: Duration

    /// - Parameter now: the clock (injectable, so expiry can be tested).
    public init(
        database: Database, sealer: any PersonalDataSealing, referencer: any SubjectReferencing, recordSeals: any RecordSealing,
        lifetime: Duration = .seconds(24 * 3600), now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.database = database
        self.sealer = sealer
        self.referencer = referencer
        self.recordSeals = recordSeals
        self.lifetime = lifetime
        self.now = now
    }

    /// What the front-end gets back: the link is shown once, to be sent to the candidate.
    public struct Created: Sendable {
        public let id: UUID
        public let gatewayLink: GatewayLink
        public let expiresAt: Date
        public let subject: SubjectReference
    }

    /// Creates a session for the candidate known to the tenant as `externalID`. Name and email
    /// are optional and stored only sealed under the tenant's `data` key.
    public func create(tenant: TenantID, externalID: PersonalText, name: PersonalText?, email: PersonalText?) async throws -> Created {
        try Self.check(externalID, field: "external_id", maxBytes: 256, required: true)
        try Self.check(name, field: "name", maxBytes: 512, required: false)
        try Self.check(email, field: "email", maxBytes: 320, required: false)

        let references = try await referencer.references(for: externalID, tenant: tenant)
        // The active version's reference: a subject stored under an older pii version is moved
        // to it when the session is inserted (below).
        guard let subject = references.first else { throw VerificationError.invalidArgument(field: "external_id", reason: "no subject reference") }

        let id = UUID()
        var dataKeyVersion: Int?
        var sealed = [String: [UInt8]]()
        for (field, text) in [("name", name), ("email", email)] {
            guard let text else { continue }
            let box = try await sealer.seal(text, tenant: tenant, keyVersion: dataKeyVersion, context: Self.sealingContext(tenant, id, field))
            dataKeyVersion = box.keyVersion
            sealed[field] = box.sealed
        }
        let link = GatewayLink.random()
        // Whole seconds: the subject MAC covers the expiry as PostgreSQL returns it.
        let expiresAt = now().wholeSeconds.addingTimeInterval(Double(lifetime.components.seconds))
        let subjectSeal = try await recordSeals.seal(SessionSubject(id: id, subject: subject.value, expiresAt: expiresAt), tenant: tenant)
        let new = SessionStore.New(
            id: id, subject: subject, sealedName: sealed["name"], sealedEmail: sealed["email"],
            dataKeyVersion: dataKeyVersion, expiresAt: expiresAt, linkHash: link.hash, subjectSeal: subjectSeal
        )
        // One statement, one commit (issue 12): the function inserts unless rows of the subject
        // are still stored under an older reference, and then writes nothing.
        let old = references.dropFirst().map(\.value).filter { $0 != subject.value }
        do {
            try await database.withAutocommit(context: "create session") { connection in
                guard try await SessionStore.insertUnlessStoredUnder(old, new, tenant: tenant, on: connection) else { throw MoveFirst() }
            }
        } catch is MoveFirst {
            // Rare: once per subject after a pii rotation (or for an id first stored
            // unnormalised). The move and the insert commit together, as before.
            try await database.withTenant(tenant, context: "create session") { connection in
                _ = try await SubjectReferenceMigration.moveToActive(references, tenant: tenant, seals: self.recordSeals, on: connection)
                try await SessionStore.insert(new, tenant: tenant, on: connection)
            }
        }
        return Created(id: id, gatewayLink: link, expiresAt: expiresAt, subject: subject)
    }

    /// The candidate opens the link: once, before it expires, for the tenant that made it.
    /// - Returns: the session it opens.
    public func openGateway(tenant: TenantID, link: GatewayLink) async throws -> UUID {
        try await openGatewayStatus(tenant: tenant, link: link).id
    }

    /// ``openGateway(tenant:link:)``, answering with the opened session's status as the
    /// statement that opened it left it (what the OpenGateway RPC returns: one commit, not two).
    public func openGatewayStatus(tenant: TenantID, link: GatewayLink) async throws -> SessionStatus {
        let now = now()
        // One statement, one commit (issue 12); a refusal writes nothing and is not counted.
        let opened = try await database.withAutocommit(context: "open gateway link") { connection in
            switch try await SessionStore.openGateway(hash: link.hash, tenant: tenant, now: now, on: connection) {
            case .success(let row): return row
            case .failure(.link(.unknown)): throw VerificationError.gatewayLinkUnknown
            case .failure(.link(.alreadyUsed)): throw VerificationError.gatewayLinkUsed
            case .failure(.link(.expired)): throw VerificationError.gatewayLinkExpired
            case .failure(.sessionNotFound(let session)): throw VerificationError.sessionNotFound(session)
            }
        }
        // A row opened now records nothing a MAC covers, unless the database's writer put it there.
        try await recordSeals.requireAuthentic(opened, tenant: tenant)
        return SessionStatus(opened, now: now)
    }

    /// Records the candidate's consent to the notice `noticeVersion`, once the link is open.
    /// Sent again for the same notice, it writes nothing and returns the first consent's time.
    public func recordConsent(tenant: TenantID, session: UUID, noticeVersion: String) async throws -> Date {
        guard (1...64).contains(noticeVersion.utf8.count), noticeVersion.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw VerificationError.invalidArgument(field: "notice_version", reason: "1 to 64 printable ASCII characters")
        }
        // Whole seconds: the session's MAC covers the consent time as PostgreSQL returns it.
        let now = now().wholeSeconds
        let seal = try await recordSeals.seal(SessionRecord(id: session, noticeVersion: noticeVersion, consentedAt: now), tenant: tenant)
        // One statement, one commit (issue 12): the function re-checks the session as it writes.
        // A refusal throws inside, so that it is not counted as a commit (a repeat is: its
        // statement ran and committed, writing nothing).
        let consentedNow = try await database.withAutocommit(context: "record consent") { connection -> Bool in
            switch try await SessionStore.recordConsentIfOpen(session, noticeVersion: noticeVersion, tenant: tenant, at: now, seal: seal, on: connection) {
            case .consented: return true
            case .alreadyConsented: return false
            case .notFound: throw VerificationError.sessionNotFound(session)
            case .completed: throw VerificationError.sessionCompleted(session)
            case .expired: throw VerificationError.sessionExpired(session)
            case .notOpened: throw VerificationError.linkNotOpened(session)
            case .changed: throw VerificationError.consentChanged(session)
            }
        }
        return consentedNow ? now : try await firstConsent(tenant: tenant, session: session, noticeVersion: noticeVersion)
    }

    /// The time of a consent to `noticeVersion` recorded before, as Custos recorded it: a repeat
    /// returns it unchanged (it overwrote it, helper-91), never a time the database's writer set.
    private func firstConsent(tenant: TenantID, session: UUID, noticeVersion: String) async throws -> Date {
        let row = try await database.withTenant(tenant, context: "read consent") { connection in
            try await SessionStore.get(session, on: connection)
        }
        guard let row else { throw VerificationError.sessionNotFound(session) }
        try await recordSeals.requireAuthentic(row, tenant: tenant)
        guard let consentedAt = row.consentedAt else { throw RecordIntegrityError.session(session) }
        // Another call consented to another notice between the write and this read (helper-92):
        // that consent's time is not this one's.
        guard row.noticeVersion == noticeVersion else { throw VerificationError.consentChanged(session) }
        return consentedAt
    }

    public func status(tenant: TenantID, session: UUID) async throws -> SessionStatus {
        let now = now()
        let (row, completed) = try await database.withTenant(tenant, context: "read session") { connection -> (SessionStore.Row?, Bool) in
            guard let row = try await SessionStore.get(session, on: connection) else { return (nil, false) }
            return (row, row.outcome == nil ? try await !SessionStore.completed([session], on: connection).isEmpty : false)
        }
        guard let row else { throw VerificationError.sessionNotFound(session) }
        // What GetSession shows and SignDelivery signs: never a consent or outcome Custos did not
        // record, nor an open session for one Custos completed (its outcome cleared: helper-82).
        try await recordSeals.requireAuthentic(row, tenant: tenant)
        if completed { throw RecordIntegrityError.session(session) }
        return SessionStatus(row, now: now)
    }

    /// Checks, before any features are processed, that the session may take them.
    /// - Returns: the session's subject.
    public func requireConsent(tenant: TenantID, session: UUID) async throws -> SubjectReference {
        let row = try await database.withTenant(tenant, context: "check consent") { connection in
            try await SessionStore.get(session, on: connection)
        }
        guard let row else { throw VerificationError.sessionNotFound(session) }
        try Self.requireReady(row, now: now())
        try await recordSeals.requireAuthentic(row, tenant: tenant)
        return row.subject
    }

    /// Consented, not completed, not expired: the rule checked before tokenizing and again in
    /// the transaction that records the outcome.
    static func requireReady(_ row: SessionStore.Row, now: Date) throws {
        try requireOpen(row, now: now)
        guard row.consentedAt != nil else { throw VerificationError.consentRequired(row.id) }
    }

    static func requireOpen(_ row: SessionStore.Row, now: Date) throws {
        guard row.outcome == nil else { throw VerificationError.sessionCompleted(row.id) }
        guard now < row.expiresAt else { throw VerificationError.sessionExpired(row.id) }
    }

    /// Associated data for a sealed field: which tenant, session and field it belongs to.
    static func sealingContext(_ tenant: TenantID, _ session: UUID, _ field: String) -> [UInt8] {
        Array("custos/session/v1\0\(tenant.rawValue)\0\(session.uuidString.lowercased())\0\(field)".utf8)
    }

    static func check(_ text: PersonalText?, field: String, maxBytes: Int, required: Bool) throws {
        guard let text, !text.value.isEmpty else {
            if required { throw VerificationError.invalidArgument(field: field, reason: "required") }
            return
        }
        guard text.value.utf8.count <= maxBytes else {
            throw VerificationError.invalidArgument(field: field, reason: "at most \(maxBytes) bytes")
        }
        guard !text.value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw VerificationError.invalidArgument(field: field, reason: "control characters are not allowed")
        }
    }

    /// CreateSession's single statement found rows of the subject under an older reference.
    private struct MoveFirst: Error {}
}

/// A session as its tenant sees it: never the name, email, features or scores.
public struct SessionStatus: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Codable {
        case created, opened, consented, completed, expired
    }

    public enum Outcome: String, Sendable, Codable {
        case enrolled, green, amber, red
        case noMatch = "no_match"
    }

    public let id: UUID
    public let state: State
    public let outcome: Outcome?
    public let confidence: Decision.Confidence?
    public let noticeVersion: String?
    public let consentedAt: Date?
    public let completedAt: Date?
    public let createdAt: Date
    public let expiresAt: Date
    /// The biometric key version the outcome was reached under.
    public let biometricKeyVersion: Int?

    init(_ row: SessionStore.Row, now: Date) {
        id = row.id
        outcome = row.outcome.flatMap(Outcome.init(rawValue:))
        confidence = row.confidence.flatMap(Decision.Confidence.init(rawValue:))
        state = row.outcome != nil ? .completed
            : now >= row.expiresAt ? .expired
            : row.consentedAt != nil ? .consented
            : row.linkOpenedAt != nil ? .opened : .created
        noticeVersion = row.noticeVersion
        consentedAt = row.consentedAt
        completedAt = row.completedAt
        createdAt = row.createdAt
        expiresAt = row.expiresAt
        biometricKeyVersion = row.biometricKeyVersion
    }
}

public import CustosModel
public import Storage

// What the verification core needs from custody, declared here and implemented by the
// composition root (DESIGN §3): the core never imports HSM, PKCS11, Tokenization or Custody.

/// Seals and opens a candidate's name or email under the tenant's `data` key (AES-GCM in the
/// HSM). `context` is bound as associated data, so a ciphertext moved to another row or field
/// does not open.
public protocol PersonalDataSealing: Sendable {
    /// - Parameter keyVersion: `nil` for the tenant's active version.
    /// - Returns: nonce ‖ ciphertext ‖ tag, and the key version that sealed it.
    func seal(_ text: PersonalText, tenant: TenantID, keyVersion: Int?, context: [UInt8]) async throws -> (sealed: [UInt8], keyVersion: Int)
    func open(_ sealed: [UInt8], keyVersion: Int, tenant: TenantID, context: [UInt8]) async throws -> PersonalText
    /// `tenant`'s `data` keys of `versions`, looked up now, so that sealing and opening with
    /// them needs no database: inside a transaction a key read on a cache miss would wait for a
    /// second connection from the pool the transaction holds one of, and enough such
    /// transactions at once starve the pool until they time out.
    func prepared(tenant: TenantID, versions: Set<Int>) async throws -> any PreparedPersonalDataSealing
}

/// ``PersonalDataSealing`` with one tenant's keys already looked up: HSM calls only.
public protocol PreparedPersonalDataSealing: Sendable {
    /// The `data` versions it holds keys of.
    var versions: Set<Int> { get }
    /// - Precondition: `keyVersion` is one of ``versions`` (else custody's unknown-version error).
    func seal(_ text: PersonalText, keyVersion: Int, context: [UInt8]) async throws -> [UInt8]
    func open(_ sealed: [UInt8], keyVersion: Int, context: [UInt8]) async throws -> PersonalText
}

/// Makes pseudonymous subject references: HMACs of the tenant's external id under its `pii`
/// key, never the id itself.
public protocol SubjectReferencing: Sendable {
    /// The references of `externalID` under every `pii` version still usable, the active
    /// version's first (a subject enrolled before a `pii` rotation is still found).
    func references(for externalID: PersonalText, tenant: TenantID) async throws -> [SubjectReference]
}

/// Appends to the tamper-evident audit log. Entries carry counts and ids, never personal data
/// or subject references.
public protocol AuditRecording: Sendable {
    func record(tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String]) async throws
    /// Records inside the caller's open transaction, as its last statement, so that the action
    /// and its entry commit or roll back together.
    func record(
        tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String], on connection: DatabaseTransaction
    ) async throws
    /// The newest entry of `action` for `tenant` whose MAC checks, read on `connection`: what
    /// Custos last recorded, which the database's writer can neither change nor remove.
    func newestAuthenticEntry(action: AuditAction, tenant: TenantID, on connection: DatabaseTransaction) async throws -> NewestAuditEntry
}

/// Computes and checks the HSM MACs stored records carry (migration 33): a template's, binding
/// its token to tenant, subject and biometric version, and a session's two, over its subject and
/// expiry and over its consent and outcome. A token the database's writer copied onto another
/// subject's row, a session it pointed at another subject, or a consent or outcome it wrote,
/// fails the check, so it is never compared, shown, signed or exported.
public protocol RecordSealing: Sendable {
    /// The MACs of `records`, in order (one HSM round trip for all).
    func seal(_ records: [SealableRecord], tenant: TenantID) async throws -> [RecordSeal]
    /// Whether every record, read with its seal, is one Custos wrote (one HSM round trip for
    /// all). A record without a MAC passes only until every record has been sealed; a session
    /// that records nothing yet needs none for its consent and outcome.
    func areAuthentic(_ records: [(record: SealableRecord, seal: RecordSeal?)], tenant: TenantID) async throws -> Bool
}

extension RecordSealing {
    /// The MAC of `template` stored under `subject`.
    public func seal(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> RecordSeal {
        try await seal([.template(template, subject: subject)], tenant: tenant)[0]
    }

    /// The MAC of a session recording `record`.
    public func seal(_ record: SessionRecord, tenant: TenantID) async throws -> RecordSeal {
        try await seal([.session(record)], tenant: tenant)[0]
    }

    /// The MAC binding a new session to its subject and expiry.
    public func seal(_ binding: SessionSubject, tenant: TenantID) async throws -> RecordSeal {
        try await seal([.sessionSubject(binding)], tenant: tenant)[0]
    }

    /// Whether `template`, read from `subject`'s row, is one Custos wrote there.
    public func isAuthentic(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool {
        try await areAuthentic([(.template(template, subject: subject), template.seal)], tenant: tenant)
    }

    /// Whether a session row binds the subject and expiry Custos created it with.
    public func isAuthentic(_ binding: SessionSubject, seal: RecordSeal?, tenant: TenantID) async throws -> Bool {
        try await areAuthentic([(.sessionSubject(binding), seal)], tenant: tenant)
    }

    /// - Throws: ``RecordIntegrityError/session(_:)`` unless `row`'s subject, expiry, consent
    ///   and outcome are as Custos recorded them (its two MACs in one HSM round trip).
    func requireAuthentic(_ row: SessionStore.Row, tenant: TenantID) async throws {
        guard try await areAuthentic(row.sealedParts, tenant: tenant) else { throw RecordIntegrityError.session(row.id) }
    }
}

extension SessionStore.Row {
    /// The row's two sealed parts: its subject and expiry, its consent and outcome.
    var sealedParts: [(record: SealableRecord, seal: RecordSeal?)] {
        [(.sessionSubject(subjectBinding), subjectSeal), (.session(record), seal)]
    }
}

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
}

/// Computes and checks the HSM MAC every stored template carries (migration 33): a token the
/// database's writer copied onto another subject's row, or changed in place, fails the check,
/// so it is never compared.
public protocol TemplateSealing: Sendable {
    /// The MAC of `template` stored under `subject`.
    func seal(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> TemplateSeal
    /// Whether `template`, read from `subject`'s row, is one Custos wrote there. A row without
    /// a MAC (written before migration 33) passes only until every template has been sealed.
    func isAuthentic(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool
}

public import CustosModel

/// One kind of data-plane key use, the unit the audit log counts: a tenant's key of one purpose
/// and version, used by one operation, with one outcome.
public struct KeyUse: Sendable, Hashable {
    /// What the key was used for. The raw value is what `key.use` audit entries name (covered by
    /// the entries' hashes: never change one).
    public enum Operation: String, Sendable, Hashable, CaseIterable {
        /// Biometric enrolment, 1:1 verification, 1:N identification: one tokenization each
        /// (counted under `bio-prf`, the key every tokenization uses; `bio-seed` shares its
        /// version and is used through the cached projection).
        case enrol, verify, identify
        /// An API key checked against its `apikey-pepper` HMAC.
        case apiKeyVerify = "apikey.verify"
        /// One webhook signature (`webhook` HMAC or `webhook-ed25519`), per usable version.
        case webhookSign = "webhook.sign"
        /// A name or email sealed or opened under the `data` key.
        case seal, open
        /// A subject reference computed under a `pii` key (one per version looked up).
        case reference
    }

    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        /// The operation completed (whatever the biometric decision was).
        case success
        /// The operation failed once the tenant was known: an HSM or key error, a wrong API key
        /// secret, a sealed value that does not open.
        case failure
    }

    public let tenant: TenantID
    public let purpose: KeyPurpose
    /// 0 when the call failed before a version was resolved (no usable key, key unreadable).
    public let version: Int
    public let operation: Operation
    public let outcome: Outcome

    public init(tenant: TenantID, purpose: KeyPurpose, version: Int, operation: Operation, outcome: Outcome) {
        self.tenant = tenant
        self.purpose = purpose
        self.version = version
        self.operation = operation
        self.outcome = outcome
    }

    /// The key of this use's count in a `key.use` entry's details: `purpose/vN/operation/outcome`.
    public var detailKey: String { "\(purpose.rawValue)/v\(version)/\(operation.rawValue)/\(outcome.rawValue)" }
}

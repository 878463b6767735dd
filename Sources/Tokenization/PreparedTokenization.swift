public import CustosModel
import Synchronization

/// A tokenization paid for and keyed, waiting for its features (``BiometricTokenizer/prepare(tenant:version:)``):
/// what a data-plane call takes before its one transaction, so that inside it the token needs
/// the HSM and nothing from the database.
///
/// The budget unit it holds is spent by the first ``tokenize(_:)``; ``release()`` gives it back
/// to this instance's lease when the call was refused before tokenizing (no consent, a completed
/// session, too many attempts), so a refusal costs the tenant nothing, as before.
public final class PreparedTokenization: Sendable {
    let tokenizer: BiometricTokenizer
    public let tenant: TenantID
    let keys: BiometricTokenizer.BiometricKeys
    private let unspent = Atomic<Bool>(true)

    init(tokenizer: BiometricTokenizer, tenant: TenantID, keys: BiometricTokenizer.BiometricKeys) {
        self.tokenizer = tokenizer
        self.tenant = tenant
        self.keys = keys
    }

    /// The biometric key version the token will be made under.
    public var keyVersion: Int { keys.version }

    /// The token of `features`. A second call takes another unit of the budget (and may then
    /// need the database, like ``BiometricTokenizer/tokenize(_:tenant:version:)``).
    /// - Throws: ``CustodyError`` (HSM), ``TokenizationError`` (a second call over budget).
    public func tokenize(_ features: FeatureVector) async throws -> BiometricToken {
        if !unspent.exchange(false, ordering: .acquiringAndReleasing) { try await tokenizer.limiter?.acquire(tenant) }
        return try await tokenizer.tokenize(features, tenant: tenant, keys: keys)
    }

    /// Gives the budget unit back when ``tokenize(_:)`` was never called; nothing otherwise.
    public func release() {
        if unspent.exchange(false, ordering: .acquiringAndReleasing) { tokenizer.limiter?.giveBack(tenant) }
    }
}

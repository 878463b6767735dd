public import CustosModel
public import HSM
public import Storage

/// Why a custody operation failed. Descriptions name tenants, purposes and versions — never key
/// material, API keys, secrets or data.
public enum CustodyError: Error, Sendable, CustomStringConvertible {
    case unknownTenant(TenantID)
    case tenantDisabled(TenantID)
    case noActiveKey(TenantID, KeyPurpose)
    case unknownKeyVersion(TenantID, KeyPurpose, Int)
    /// The stored row's MAC does not match: a blob or state was changed or moved in the database.
    case rowTampered(TenantID, KeyPurpose, Int)
    /// The HSM refused to unwrap (tampered blob or wrong KEK).
    case cannotUnwrap(TenantID, KeyPurpose, Int)
    case keyDestroyed(TenantID, KeyPurpose, Int)
    /// A state change the lifecycle does not allow (e.g. destroying an active key).
    case invalidTransition(TenantID, KeyPurpose, Int, from: KeyState, to: KeyState)
    /// Destruction refused: live data still needs this version, or the waiting period is not over.
    case stillNeeded(TenantID, KeyPurpose, Int, reason: String)
    /// A root key is missing from the token.
    case rootKeyMissing(String)
    /// Data sealed under this key version does not open: the row was altered or moved.
    case sealedDataInvalid(TenantID, KeyPurpose, Int)
    /// The audit log stands behind (or beside) its HSM anchor: newest entries were deleted or
    /// the chain rewritten. Appends are refused until an officer investigates.
    case auditLogBehindAnchor(anchoredSeq: Int64, logSeq: Int64)
    /// The HSM holds an audit anchor object whose MAC is wrong: refused, never overwritten.
    case auditAnchorInvalid
    case hsm(HSMError)
    case storage(StorageError)

    public var isRetryable: Bool {
        switch self {
        case .hsm(let error): error.isRetryable
        case .storage(let error): error.isRetryable
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unknownTenant(let tenant): "unknown tenant \(tenant)"
        case .tenantDisabled(let tenant): "tenant \(tenant) is disabled"
        case .noActiveKey(let tenant, let purpose): "tenant \(tenant) has no active \(purpose.rawValue) key"
        case .unknownKeyVersion(let tenant, let purpose, let version): "tenant \(tenant) has no \(purpose.rawValue) key v\(version)"
        case .rowTampered(let tenant, let purpose, let version):
            "stored \(purpose.rawValue) key v\(version) of tenant \(tenant) fails its integrity check; refusing to use it"
        case .cannotUnwrap(let tenant, let purpose, let version): "cannot unwrap \(purpose.rawValue) key v\(version) of tenant \(tenant)"
        case .keyDestroyed(let tenant, let purpose, let version): "\(purpose.rawValue) key v\(version) of tenant \(tenant) is destroyed"
        case .invalidTransition(let tenant, let purpose, let version, let from, let to):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) cannot go from \(from.rawValue) to \(to.rawValue)"
        case .stillNeeded(let tenant, let purpose, let version, let reason):
            "\(purpose.rawValue) key v\(version) of tenant \(tenant) cannot be destroyed: \(reason)"
        case .rootKeyMissing(let label): "root key \(label) is not on the token"
        case .sealedDataInvalid(let tenant, let purpose, let version):
            "data sealed under \(purpose.rawValue) key v\(version) of tenant \(tenant) does not open (altered or moved row)"
        case .auditLogBehindAnchor(let anchoredSeq, let logSeq):
            "the audit log ends at entry \(logSeq) but the HSM anchored entry \(anchoredSeq): refusing to append"
        case .auditAnchorInvalid: "the HSM's audit anchor fails its MAC: refusing to append"
        case .hsm(let error): error.description
        case .storage(let error): error.description
        }
    }

    /// Wraps lower-layer errors so callers see one type.
    static func wrap(_ error: any Error) -> any Error {
        switch error {
        case let error as CustodyError: error
        case let error as HSMError: CustodyError.hsm(error)
        case let error as StorageError: CustodyError.storage(error)
        default: error
        }
    }
}

/// Runs `body`, presenting HSM and storage errors as ``CustodyError``.
func custody<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch {
        throw CustodyError.wrap(error)
    }
}

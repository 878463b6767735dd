import PostgresNIO

/// What went wrong with the database, in terms a caller can act on. Descriptions carry the
/// SQLSTATE and the operation, never a bound value (values may be secret-derived).
public enum StorageError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The database cannot be reached or did not answer in time. Retryable (`UNAVAILABLE`).
    case unavailable(String)
    /// A unique constraint refused the row (`23505`): it exists already.
    case conflict(String)
    /// Row-level security or a privilege refused the statement (`42501`).
    case permissionDenied(String)
    /// Nothing matched.
    case notFound(String)
    /// A row the statement locks without waiting (`NOWAIT`) is held by another transaction
    /// (`55P03`): the caller may try again once that one ends.
    case locked(String)
    /// The template row carries a MAC withdrawn when a row of it was deleted or replaced
    /// (``TemplateStore/withdrawnMACState``): the same token of the same subject and version was
    /// written before and removed since.
    case withdrawnTemplateMAC(String)
    /// Any other server error, by SQLSTATE.
    case query(sqlState: String, context: String)
    /// A configuration problem (bad schema name, unreadable password file, …).
    case configuration(String)

    public var isRetryable: Bool {
        if case .unavailable = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .unavailable(let reason): "database unavailable: \(reason)"
        case .conflict(let context): "already exists: \(context)"
        case .permissionDenied(let context): "permission denied: \(context)"
        case .notFound(let context): "not found: \(context)"
        case .locked(let context): "held by another transaction: \(context)"
        case .withdrawnTemplateMAC(let context): "template withdrawn before: \(context)"
        case .query(let sqlState, let context): "database error \(sqlState): \(context)"
        case .configuration(let reason): "database configuration: \(reason)"
        }
    }

    /// Classifies anything PostgresNIO throws.
    static func from(_ error: any Error, context: String) -> StorageError {
        if let storage = error as? StorageError { return storage }
        guard let psql = error as? PSQLError else {
            return .unavailable("\(context): \(type(of: error))")
        }
        switch psql.code {
        case .server:
            let state = psql.serverInfo?[.sqlState] ?? "?????"
            switch state {
            case "23505": return .conflict(context)
            case "42501": return .permissionDenied(context)
            case "55P03": return .locked(context)
            case TemplateStore.withdrawnMACState: return .withdrawnTemplateMAC(context)
            case "57P01", "57P02", "57P03", "53300", "08000", "08003", "08006", "08001", "08004":
                return .unavailable("\(context) (SQLSTATE \(state))")
            case "57014": return .unavailable("\(context): statement timeout")
            default: return .query(sqlState: state, context: context)
            }
        default:
            return .unavailable("\(context): \(psql.code)")
        }
    }
}

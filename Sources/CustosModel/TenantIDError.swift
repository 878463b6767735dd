/// Why text is not a ``TenantID``. The description never repeats the text: callers add it where
/// it is safe to show (the CLI echoes its own argument; the RPC names only the field).
public enum TenantIDError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not a canonical UUID (36 characters, hex and dashes).
    case notATenantID

    public var description: String {
        switch self {
        case .notATenantID: "not a tenant id (a UUID)"
        }
    }
}

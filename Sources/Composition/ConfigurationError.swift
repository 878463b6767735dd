/// A configuration that cannot be read or does not say what a command needs (the CLI exits 1
/// with this description, as for every local problem).
public enum ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// No configuration file found or readable.
    case missing(String)
    /// The file at `path` is there but unusable for the reason given.
    case invalid(path: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let reason): "configuration missing: \(reason)"
        case .invalid(let path, let reason): "configuration \(path) is invalid: \(reason)"
        }
    }
}

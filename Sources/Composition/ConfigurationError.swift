/// A configuration that cannot be read or does not say what a command needs (the CLI exits 1
/// with this description, as for every local problem).
public enum ConfigurationError: Error, CustomStringConvertible, Equatable {
    /// No configuration file found or readable.
    case missing(String)
    /// The file at `path` is there but unusable for the reason given.
    case invalid(path: String, reason: String)
    /// The PKCS#11 module fails checks custody needs (``SelfTest/custodyBlockers(_:)``): it
    /// cannot keep tenant keys unreadable with the user PIN, so nothing is served.
    case moduleUnfit(modulePath: String, failed: [String])

    public var description: String {
        switch self {
        case .missing(let reason): "configuration missing: \(reason)"
        case .invalid(let path, let reason): "configuration \(path) is invalid: \(reason)"
        case .moduleUnfit(let modulePath, let failed):
            "the PKCS#11 module \(modulePath) cannot keep tenant keys unreadable, refusing to serve custody: "
                + failed.joined(separator: "; ") + " (see `custos hsm selftest`)"
        }
    }
}

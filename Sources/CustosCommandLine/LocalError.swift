/// Problems on this side of any server other than the configuration (``ConfigurationError``):
/// files, arguments, refusals (exit code 1).
public enum LocalError: Error, CustomStringConvertible {
    case failed(String)

    public var description: String {
        switch self {
        case .failed(let reason): reason
        }
    }
}

/// Problems on this side of any server other than the configuration (``ConfigurationError``):
/// files, arguments, refusals (exit code 1).
enum LocalError: Error, CustomStringConvertible {
    case failed(String)

    var description: String {
        switch self {
        case .failed(let reason): reason
        }
    }
}

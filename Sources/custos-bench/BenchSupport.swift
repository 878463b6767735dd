// The few command-line helpers custos-bench shares with `custos` in behaviour: the same local
// flags and configuration lookup, the same logging, JSON and local errors. Copied rather than
// shared through a library target so that neither executable's helpers become API (follow-up:
// a small CLI-support target if they grow).
import ArgumentParser
import Composition
import Foundation
import Logging

/// How a local command finds its configuration: flags override the environment, which
/// overrides `.custos/config.json` (as `custos`'s local options).
struct LocalOptions: ParsableArguments {
    @Option(help: "Path of config.json (default: CUSTOS_CONFIG, else .custos/config.json above the current directory).")
    var config: String?

    @Option(help: "Absolute path of the PKCS#11 module (overrides the configuration).")
    var modulePath: String?

    @Option(help: "Label of the token to use (overrides the configuration).")
    var tokenLabel: String?

    @Option(help: "File holding the user PIN, mode 0600 (overrides the configuration).")
    var userPINFile: String?

    @Option(help: "Environment variable holding the user PIN (overrides the PIN file).")
    var userPINEnv: String?

    @Option(help: "Worker threads (and sessions) of the pool.")
    var workers: Int?

    func loadConfiguration() throws -> CustosConfiguration {
        var configuration = try CustosConfiguration.load(explicitPath: config)
        if let modulePath { configuration.hsm.modulePath = modulePath }
        if let tokenLabel { configuration.hsm.tokenLabel = tokenLabel }
        if let userPINFile { configuration.hsm.userPINFile = userPINFile }
        if let userPINEnv { configuration.hsm.userPINEnvironment = userPINEnv }
        if let workers { configuration.hsm.workers = workers }
        configuration.applyEnvironment()
        return configuration
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json
}

/// Problems on this side (exit code 1).
enum LocalError: Error, CustomStringConvertible {
    case failed(String)

    var description: String {
        switch self {
        case .failed(let reason): reason
        }
    }
}

extension CustosRuntime.Options {
    /// A benchmark's runtime: logs to standard error, the service role, root keys checked.
    static func cli() -> Self { Self(logger: makeLogger()) }
}

func makeLogger() -> Logger {
    var logger = Logger(label: "custos") { StreamLogHandler.standardError(label: $0) }
    let level = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:))
    logger.logLevel = level ?? .warning
    return logger
}

func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

public import ArgumentParser
public import Composition

/// How a local command finds its configuration: flags override the environment, which
/// overrides `.custos/config.json`.
public struct LocalOptions: ParsableArguments {
    @Option(help: "Path of config.json (default: CUSTOS_CONFIG, else .custos/config.json above the current directory).")
    public var config: String?

    @Option(help: "Absolute path of the PKCS#11 module (overrides the configuration).")
    public var modulePath: String?

    @Option(help: "Label of the token to use (overrides the configuration).")
    public var tokenLabel: String?

    @Option(help: "File holding the user PIN, mode 0600 (overrides the configuration).")
    public var userPINFile: String?

    @Option(help: "Environment variable holding the user PIN (overrides the PIN file).")
    public var userPINEnv: String?

    @Option(help: "Worker threads (and sessions) of the pool.")
    public var workers: Int?

    public init() {}

    public func loadConfiguration() throws -> CustosConfiguration {
        var configuration = try CustosConfiguration.load(explicitPath: config)
        if let modulePath { configuration.hsm.modulePath = modulePath }
        if let tokenLabel { configuration.hsm.tokenLabel = tokenLabel }
        if let userPINFile { configuration.hsm.userPINFile = userPINFile }
        if let userPINEnv { configuration.hsm.userPINEnvironment = userPINEnv }
        if let workers { configuration.hsm.workers = workers }
        // Token flags name one token (e.g. `ceremony restore` onto a replica): the list is not used.
        if modulePath != nil || tokenLabel != nil || userPINFile != nil || userPINEnv != nil { configuration.hsm.tokens = nil }
        configuration.applyEnvironment()
        return configuration
    }
}

public enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case table, json
}

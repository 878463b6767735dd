import Foundation
public import HSM

/// `.custos/config.json`, as `scripts/setup` writes it: what the CLI, `serve` and the
/// benchmarks read, and what ``CustosRuntime`` is built from.
public struct CustosConfiguration: Codable, Sendable {
    public struct HSMSection: Codable, Sendable {
        public var modulePath: String
        public var tokenLabel: String
        public var userPINFile: String?
        public var userPINEnvironment: String?
        public var softhsmConf: String?
        /// `C_Initialize`'s `pReserved` string, for modules that need one (NSS softokn:
        /// `configdir='sql:/path' certPrefix='' keyPrefix='' secmod='secmod.db'`).
        public var initArguments: String?
        public var workers: Int?
        /// Live Ed25519 webhook key pairs (token objects) one tenant may hold; default
        /// `WebhookSigner.defaultTokenObjectLimit` (8).
        public var tokenObjectsPerTenant: Int?
        /// Most unwrapped tenant keys (HSM session objects) the pool keeps; default
        /// `HSMConfiguration.defaultMaxCachedKeys` (1,000), see docs/operations.md.
        public var maxCachedKeys: Int?
        /// Several tokens holding the same root keys (HSM partitions, ceremony replicas), the
        /// first one primary; when absent, the single token above. When present, `modulePath`
        /// and `tokenLabel` may be left out (they default to the first entry's) and must name
        /// the first entry otherwise. See docs/operations.md, "Several tokens".
        public var tokens: [Token]?

        /// One entry of ``tokens``. The PIN comes from a 0600 file or the environment, never argv.
        public struct Token: Codable, Sendable, Hashable {
            public var modulePath: String
            public var tokenLabel: String
            public var userPINFile: String?
            public var userPINEnvironment: String?
            public var initArguments: String?

            public init(modulePath: String, tokenLabel: String, userPINFile: String? = nil, userPINEnvironment: String? = nil, initArguments: String? = nil) {
                self.modulePath = modulePath
                self.tokenLabel = tokenLabel
                self.userPINFile = userPINFile
                self.userPINEnvironment = userPINEnvironment
                self.initArguments = initArguments
            }
        }

        public init(
            modulePath: String, tokenLabel: String, userPINFile: String? = nil, userPINEnvironment: String? = nil,
            softhsmConf: String? = nil, workers: Int? = nil, tokenObjectsPerTenant: Int? = nil, maxCachedKeys: Int? = nil
        ) {
            self.modulePath = modulePath
            self.tokenLabel = tokenLabel
            self.userPINFile = userPINFile
            self.userPINEnvironment = userPINEnvironment
            self.softhsmConf = softhsmConf
            self.workers = workers
            self.tokenObjectsPerTenant = tokenObjectsPerTenant
            self.maxCachedKeys = maxCachedKeys
        }

        private enum CodingKeys: String, CodingKey {
            case modulePath, tokenLabel, userPINFile, userPINEnvironment, softhsmConf, initArguments, workers, tokenObjectsPerTenant
            case maxCachedKeys, tokens
        }

        /// As synthesised, but `modulePath` and `tokenLabel` default to the first of `tokens`.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            tokens = try container.decodeIfPresent([Token].self, forKey: .tokens)
            let first = tokens?.first
            if let first, !container.contains(.modulePath) {
                modulePath = first.modulePath
            } else {
                modulePath = try container.decode(String.self, forKey: .modulePath)
            }
            if let first, !container.contains(.tokenLabel) {
                tokenLabel = first.tokenLabel
            } else {
                tokenLabel = try container.decode(String.self, forKey: .tokenLabel)
            }
            userPINFile = try container.decodeIfPresent(String.self, forKey: .userPINFile)
            userPINEnvironment = try container.decodeIfPresent(String.self, forKey: .userPINEnvironment)
            softhsmConf = try container.decodeIfPresent(String.self, forKey: .softhsmConf)
            initArguments = try container.decodeIfPresent(String.self, forKey: .initArguments)
            workers = try container.decodeIfPresent(Int.self, forKey: .workers)
            tokenObjectsPerTenant = try container.decodeIfPresent(Int.self, forKey: .tokenObjectsPerTenant)
            maxCachedKeys = try container.decodeIfPresent(Int.self, forKey: .maxCachedKeys)
        }
    }

    public struct PostgresSection: Codable, Sendable {
        public var socketDirectory: String
        public var port: Int
        public var database: String
        public var user: String
        public var passwordFile: String
        public var ownerUser: String?
        public var ownerPasswordFile: String?
        public var schema: String?
        /// Connections the service's pool opens at most (default
        /// ``DatabaseConfiguration/defaultMaximumConnections``; docs/operations.md says how it
        /// was chosen).
        public var maximumConnections: Int?

        public init(
            socketDirectory: String, port: Int, database: String, user: String, passwordFile: String,
            ownerUser: String? = nil, ownerPasswordFile: String? = nil, schema: String? = nil
        ) {
            self.socketDirectory = socketDirectory
            self.port = port
            self.database = database
            self.user = user
            self.passwordFile = passwordFile
            self.ownerUser = ownerUser
            self.ownerPasswordFile = ownerPasswordFile
            self.schema = schema
        }
    }

    /// The served RPC and how the CLI reaches it (scripts/setup writes the local CA's files).
    public struct RPCSection: Codable, Sendable {
        public var host: String
        public var port: Int
        public var metricsPort: Int?
        /// Where /metrics listens: loopback unless set, even when the RPC listens elsewhere
        /// (metrics name tenants and error rates; scrape them locally or through a proxy).
        public var metricsHost: String?
        /// 1:1 verifications one subject may have per window (default 20 per 86,400 s).
        public var verificationAttemptsPerSubject: Int?
        public var verificationAttemptWindowSeconds: Int?
        /// Bytes all tenants' 1:N galleries together may hold (default 1.5 GiB).
        public var galleryMemoryBytes: Int?
        /// Subjects held in memory per tenant and biometric version for 1:N (default 1,000,000).
        public var gallerySubjects: Int?
        public var serverCertificate: String?
        public var serverKey: String?
        /// The CA client certificates must chain to, and that the CLI trusts for the server.
        public var caCertificate: String?
        /// The CLI's own certificate and key (an officer's), unless given by flags or environment.
        public var clientCertificate: String?
        public var clientKey: String?
        public var noticeVersion: String?
    }

    public var hsm: HSMSection
    public var postgres: PostgresSection?
    public var rpc: RPCSection?
    /// `live` or `test`: the `<env>` part of issued API keys.
    public var keyEnvironment: String?
    /// Seconds between writes of counted key uses to the audit log (default 10; also written at
    /// a graceful shutdown, so a `kill -9` loses at most this window's counts).
    public var keyUseFlushSeconds: Int?
    /// Seconds an API key the HSM confirmed is accepted again without an HMAC (default 5;
    /// 0: every API-key call runs the HMAC). docs/threat-model.md, "The verified API-key cache".
    public var apiKeyVerifiedSeconds: Int?
    /// The custodians' escrow keys Ed25519 webhook seeds may be sealed to, as
    /// `custos ceremony generate-escrow` prints them (`sha256:` and 64 hex digits); empty or
    /// absent: no v1a key is made (``trustedEscrowKeys()``).
    public var webhookEscrowKeys: [String]?
    /// Where the configuration was read from, for messages.
    public var source: String = "defaults"

    public init(hsm: HSMSection, postgres: PostgresSection? = nil, rpc: RPCSection? = nil, keyEnvironment: String? = nil, source: String = "defaults") {
        self.hsm = hsm
        self.postgres = postgres
        self.rpc = rpc
        self.keyEnvironment = keyEnvironment
        self.source = source
    }

    private enum CodingKeys: String, CodingKey { case hsm, postgres, rpc, keyEnvironment, keyUseFlushSeconds, apiKeyVerifiedSeconds, webhookEscrowKeys }

    /// Reads the configuration from `explicitPath`, `CUSTOS_CONFIG`, or the nearest
    /// `.custos/config.json` above the current directory.
    /// - Throws: ``ConfigurationError``.
    public static func load(explicitPath: String?) throws -> CustosConfiguration {
        let environment = ProcessInfo.processInfo.environment
        let path = explicitPath ?? environment["CUSTOS_CONFIG"] ?? discover()
        guard let path else {
            throw ConfigurationError.missing("no .custos/config.json above \(FileManager.default.currentDirectoryPath); run scripts/setup or pass --config")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError.missing("cannot read \(path)")
        }
        do {
            var configuration = try JSONDecoder().decode(CustosConfiguration.self, from: data)
            configuration.source = path
            return configuration
        } catch {
            throw ConfigurationError.invalid(path: path, reason: "\(error)")
        }
    }

    private static func discover() -> String? {
        var directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).standardizedFileURL
        while true {
            let candidate = directory.appendingPathComponent(".custos/config.json").path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            let parent = directory.deletingLastPathComponent()
            if parent.path == directory.path { return nil }
            directory = parent
        }
    }

    /// SoftHSM reads its configuration from `SOFTHSM2_CONF` at `C_Initialize`; an explicit
    /// environment variable wins over the file's.
    public func applyEnvironment() {
        if let conf = hsm.softhsmConf, ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] == nil {
            setenv("SOFTHSM2_CONF", conf, 1)
        }
    }

    /// - Throws: ``ConfigurationError`` when a token has no user PIN source, or `hsm.tokens` is
    ///   empty or disagrees with `modulePath`/`tokenLabel`.
    public func poolConfiguration() throws -> HSMConfiguration {
        guard let tokens = hsm.tokens else {
            return HSMConfiguration(
                modulePath: hsm.modulePath, token: .label(hsm.tokenLabel),
                userPIN: try pinSource(file: hsm.userPINFile, environment: hsm.userPINEnvironment, field: nil), workers: hsm.workers ?? 2,
                initArguments: hsm.initArguments,
                maxCachedKeys: hsm.maxCachedKeys ?? HSMConfiguration.defaultMaxCachedKeys
            )
        }
        guard let first = tokens.first else {
            throw ConfigurationError.invalid(path: source, reason: "hsm.tokens is empty; list at least one token or leave it out")
        }
        guard first.modulePath == hsm.modulePath, first.tokenLabel == hsm.tokenLabel else {
            throw ConfigurationError.invalid(
                path: source, reason: "hsm.modulePath/tokenLabel name another token than hsm.tokens[0]; with hsm.tokens, leave them out"
            )
        }
        let endpoints = try tokens.enumerated().map { index, token in
            TokenEndpoint(
                modulePath: token.modulePath, token: .label(token.tokenLabel),
                userPIN: try pinSource(file: token.userPINFile, environment: token.userPINEnvironment, field: "hsm.tokens[\(index)]"),
                initArguments: token.initArguments
            )
        }
        return HSMConfiguration(
            modulePath: first.modulePath, token: endpoints[0].token, userPIN: endpoints[0].userPIN, workers: hsm.workers ?? 2,
            initArguments: first.initArguments,
            maxCachedKeys: hsm.maxCachedKeys ?? HSMConfiguration.defaultMaxCachedKeys,
            replicas: Array(endpoints.dropFirst())
        )
    }

    private func pinSource(file: String?, environment: String?, field: String?) throws -> PINSource {
        if let environment { return .environment(name: environment) }
        if let file { return .file(path: file) }
        throw ConfigurationError.invalid(
            path: source, reason: "no user PIN source (userPINFile or userPINEnvironment)" + (field.map { " in \($0)" } ?? "")
        )
    }
}

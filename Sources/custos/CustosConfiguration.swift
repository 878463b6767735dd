import Foundation
import HSM
import PKCS11

/// `.custos/config.json`, as `scripts/setup` writes it.
struct CustosConfiguration: Codable {
    struct HSMSection: Codable {
        var modulePath: String
        var tokenLabel: String
        var userPINFile: String?
        var userPINEnvironment: String?
        var softhsmConf: String?
        var workers: Int?
        /// Live Ed25519 webhook key pairs (token objects) one tenant may hold; default
        /// `WebhookSigner.defaultTokenObjectLimit` (8).
        var tokenObjectsPerTenant: Int?
    }

    struct PostgresSection: Codable {
        var socketDirectory: String
        var port: Int
        var database: String
        var user: String
        var passwordFile: String
        var ownerUser: String?
        var ownerPasswordFile: String?
        var schema: String?
    }

    /// The served RPC and how the CLI reaches it (scripts/setup writes the local CA's files).
    struct RPCSection: Codable {
        var host: String
        var port: Int
        var metricsPort: Int?
        /// Where /metrics listens: loopback unless set, even when the RPC listens elsewhere
        /// (metrics name tenants and error rates; scrape them locally or through a proxy).
        var metricsHost: String?
        /// 1:1 verifications one subject may have per window (default 20 per 86,400 s).
        var verificationAttemptsPerSubject: Int?
        var verificationAttemptWindowSeconds: Int?
        /// Bytes all tenants' 1:N galleries together may hold (default 1.5 GiB).
        var galleryMemoryBytes: Int?
        var serverCertificate: String?
        var serverKey: String?
        /// The CA client certificates must chain to, and that the CLI trusts for the server.
        var caCertificate: String?
        /// The CLI's own certificate and key (an officer's), unless given by flags or environment.
        var clientCertificate: String?
        var clientKey: String?
        var noticeVersion: String?
    }

    var hsm: HSMSection
    var postgres: PostgresSection?
    var rpc: RPCSection?
    /// `live` or `test`: the `<env>` part of issued API keys.
    var keyEnvironment: String?
    /// Where the configuration was read from, for messages.
    var source: String = "defaults"

    private enum CodingKeys: String, CodingKey { case hsm, postgres, rpc, keyEnvironment }

    /// Reads the configuration from `explicitPath`, `CUSTOS_CONFIG`, or the nearest
    /// `.custos/config.json` above the current directory.
    static func load(explicitPath: String?) throws -> CustosConfiguration {
        let environment = ProcessInfo.processInfo.environment
        let path = explicitPath ?? environment["CUSTOS_CONFIG"] ?? discover()
        guard let path else {
            throw LocalError.configurationMissing("no .custos/config.json above \(FileManager.default.currentDirectoryPath); run scripts/setup or pass --config")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LocalError.configurationMissing("cannot read \(path)")
        }
        do {
            var configuration = try JSONDecoder().decode(CustosConfiguration.self, from: data)
            configuration.source = path
            return configuration
        } catch {
            throw LocalError.configurationInvalid(path: path, reason: "\(error)")
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
    func applyEnvironment() {
        if let conf = hsm.softhsmConf, ProcessInfo.processInfo.environment["SOFTHSM2_CONF"] == nil {
            setenv("SOFTHSM2_CONF", conf, 1)
        }
    }

    func poolConfiguration() throws -> HSMConfiguration {
        let pin: PINSource
        if let name = hsm.userPINEnvironment {
            pin = .environment(name: name)
        } else if let file = hsm.userPINFile {
            pin = .file(path: file)
        } else {
            throw LocalError.configurationInvalid(path: source, reason: "no user PIN source (userPINFile or userPINEnvironment)")
        }
        return HSMConfiguration(
            modulePath: hsm.modulePath, token: .label(hsm.tokenLabel), userPIN: pin, workers: hsm.workers ?? 2
        )
    }
}

/// Problems on this side of any server: configuration, files, arguments (exit code 1).
enum LocalError: Error, CustomStringConvertible {
    case configurationMissing(String)
    case configurationInvalid(path: String, reason: String)
    case failed(String)

    var description: String {
        switch self {
        case .configurationMissing(let reason): "configuration missing: \(reason)"
        case .configurationInvalid(let path, let reason): "configuration \(path) is invalid: \(reason)"
        case .failed(let reason): reason
        }
    }
}

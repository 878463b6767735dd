import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import Foundation
import HSM
import Logging
import PKCS11

struct HSMCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hsm",
        abstract: "Inspect and test the HSM (local: talks to the PKCS#11 module directly).",
        subcommands: [HSMStatusCommand.self, HSMSelfTestCommand.self, HSMInitTokenCommand.self, HSMCheckRootKeysCommand.self]
    )
}

/// The mechanisms Custos needs, and what for.
let requiredMechanisms: [(MechanismType, String)] = [
    (.sha256HMAC, "API-key hashes, webhook v1, audit chain, subject references"),
    (.aesECB, "biometric PRF"),
    (.aesGCM, "envelope encryption of names and emails"),
    (.aesCMAC, "key check values"),
    (.aesKeyWrapPad, "wrapping tenant keys under the root KEK"),
    (.eddsa, "webhook v1a signatures"),
    (.ecEdwardsKeyPairGen, "webhook v1a keys"),
    (.genericSecretKeyGen, "HMAC keys"),
    (.aesKeyGen, "AES keys"),
    (.sha256, "digests"),
]

struct HSMStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Module, token, mechanisms and pool state, and the state of each configured token (local)."
    )

    @OptionGroup var options: LocalOptions
    @Option(help: "Output format.") var output: OutputFormat = .table

    struct Report: Encodable {
        struct Module: Encodable {
            let path: String
            let cryptokiVersion: String
            let manufacturer: String
            let library: String
            let libraryVersion: String
        }
        struct Token: Encodable {
            let label: String
            let serial: String
            let manufacturer: String
            let model: String
            let slot: UInt
            let initialized: Bool
            let loginRequired: Bool
            let userPINInitialized: Bool
            let userPINCountLow: Bool
            let userPINFinalTry: Bool
            let userPINLocked: Bool
            let hasRNG: Bool
            let maxSessions: Int?
            let sessions: Int?
        }
        struct Mechanism: Encodable {
            let name: String
            let present: Bool
            let usedFor: String
        }
        /// One configured token (`hsm.tokens`; the single token without it) as a pool sees it.
        struct ConfiguredToken: Encodable {
            let label: String
            let module: String
            let inService: Bool
            /// ISO 8601, while out of service.
            let outOfServiceSince: String?
            /// The kind of failure that took it out, or kept it from starting.
            let lastErrorClass: String?
            /// Why it could not start (when the pool over every token could not).
            let error: String?
            let openSessions: Int?
            let breakerOpen: Bool?
            let probesWhileOut: Int
            let lastProbe: String?
        }
        let module: Module
        let token: Token
        let mechanisms: [Mechanism]
        let pool: SessionPoolStatistics?
        let poolError: String?
        let tokens: [ConfiguredToken]
        /// Live Ed25519 webhook keys made before escrow: on one token only (nil: not checked).
        var singleTokenKeys: [TenantKeyring.SingleTokenKey]?
        /// Escrowed Ed25519 webhook keys a configured token lacks (nil: not checked).
        var missingTokenKeys: [TenantKeyring.MissingTokenKey]?
        var singleTokenKeysError: String?
        /// The newest escrow key, its fingerprint, and whether config.json's `webhookEscrowKeys`
        /// lists it (new v1a keys are refused otherwise); nil: none recorded or not checked.
        var escrowKey: EscrowKeyStatus?
        struct EscrowKeyStatus: Codable {
            let version: Int
            let fingerprint: String
            let trusted: Bool
        }
        var healthy: Bool { pool != nil && mechanisms.allSatisfy(\.present) && tokens.allSatisfy(\.inService) }
    }

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let poolConfiguration = try configuration.poolConfiguration()
        let module = try PKCS11Module(path: poolConfiguration.modulePath, initArguments: poolConfiguration.initArguments)
        try module.initialize()
        let info = try module.info()
        let token = try module.findToken(poolConfiguration.token)
        let available = Set(try module.mechanisms(slot: token.slot))

        var statistics: SessionPoolStatistics?
        var poolError: String?
        var tokens = [Report.ConfiguredToken]()
        do {
            (statistics, tokens) = try await CustosRuntime.withPool(poolConfiguration, options: .cli(module: module)) { pool in
                (pool.statistics, pool.tokenHealth.map(Self.configuredToken))
            }
        } catch {
            poolError = String(describing: error)
            tokens = await Self.eachToken(poolConfiguration, firstModule: module)
        }

        var report = Report(
            module: .init(
                path: module.path, cryptokiVersion: info.cryptokiVersion.description, manufacturer: info.manufacturer,
                library: info.libraryDescription, libraryVersion: info.libraryVersion.description
            ),
            token: .init(
                label: token.label, serial: token.serialNumber, manufacturer: token.manufacturer, model: token.model,
                slot: token.slot.rawValue, initialized: token.isInitialized, loginRequired: token.isLoginRequired,
                userPINInitialized: token.isUserPINInitialized, userPINCountLow: token.userPINCountLow,
                userPINFinalTry: token.userPINFinalTry, userPINLocked: token.userPINLocked, hasRNG: token.hasRNG,
                maxSessions: token.maxSessionCount, sessions: token.sessionCount
            ),
            mechanisms: requiredMechanisms.map { .init(name: $0.0.description, present: available.contains($0.0), usedFor: $0.1) },
            pool: statistics,
            poolError: poolError,
            tokens: tokens
        )
        if configuration.postgres != nil, statistics != nil {
            do {
                let trusted = try configuration.trustedEscrowKeys()
                (report.singleTokenKeys, report.missingTokenKeys, report.escrowKey) = try await CustosRuntime.run(configuration, options: .cli()) { context in
                    let newest = try await context.keyring.verifiedEscrowKeys().max { $0.version < $1.version }
                    let escrowKey = newest.map { record in
                        let fingerprint = EscrowKeyFingerprint(publicKey: record.publicKey)
                        return Report.EscrowKeyStatus(version: record.version, fingerprint: fingerprint.description, trusted: trusted.contains(fingerprint))
                    }
                    return (try await context.keyring.singleTokenKeys(), try await context.keyring.webhookKeysMissingOnTokens(), escrowKey)
                }
            } catch {
                report.singleTokenKeysError = String(describing: error)
            }
        }
        switch output {
        case .json:
            print(try encodeJSON(report))
        case .table:
            print("module      \(report.module.path)")
            print("            \(report.module.manufacturer) \(report.module.library) \(report.module.libraryVersion), Cryptoki \(report.module.cryptokiVersion)")
            print("token       \(report.token.label) (serial \(report.token.serial), slot \(report.token.slot), \(report.token.manufacturer) \(report.token.model))")
            print("            user PIN \(report.token.userPINLocked ? "LOCKED" : report.token.userPINFinalTry ? "FINAL TRY" : report.token.userPINCountLow ? "count low" : "ok")")
            print("mechanisms")
            for mechanism in report.mechanisms {
                print("  \(mechanism.present ? "yes" : "NO ") \(mechanism.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(mechanism.usedFor)")
            }
            if let pool = report.pool {
                print("pool        started and logged in: \(pool.workers) workers, \(pool.openSessions) sessions open")
            } else {
                print("pool        FAILED: \(report.poolError ?? "unknown")")
            }
            print("tokens")
            for token in report.tokens {
                let state = token.inService ? "in service" : "OUT" + (token.outOfServiceSince.map { " since \($0)" } ?? "")
                    + (token.lastErrorClass.map { " (\($0))" } ?? "")
                let pool = token.openSessions.map { "\($0) sessions, breaker \(token.breakerOpen == true ? "OPEN" : "closed")" } ?? (token.error ?? "")
                print("  \(token.label.padding(toLength: 24, withPad: " ", startingAt: 0)) \(state); \(pool)")
            }
            if let keys = report.singleTokenKeys {
                print("ed25519     \(keys.isEmpty ? "every live webhook key is escrowed (restorable onto any token)" : "\(keys.count) webhook key(s) on ONE token only (made before escrow; rotate these tenants' v1a keys):")")
                for key in keys { print("  tenant \(key.tenant.rawValue) v\(key.version) (\(key.state.rawValue)) \(key.tokenLabel)") }
                for key in report.missingTokenKeys ?? [] {
                    print("  MISSING on token \(key.token): tenant \(key.tenant.rawValue) v\(key.version) \(key.tokenLabel) (run `custos ceremony restore-webhook-keys`)")
                }
            } else if let error = report.singleTokenKeysError {
                print("ed25519     could not check for keys on one token only: \(error)")
            }
            if let escrow = report.escrowKey {
                print("escrow key  v\(escrow.version) \(escrow.fingerprint)" + (escrow.trusted ? "" : " NOT in config.json's webhookEscrowKeys: new v1a keys are refused"))
            }
        }
        if !report.healthy { throw ExitCode(1) }
    }

    static func configuredToken(_ token: TokenHealth) -> Report.ConfiguredToken {
        Report.ConfiguredToken(
            label: token.label, module: token.modulePath, inService: token.status.inService,
            outOfServiceSince: token.status.outOfServiceSince.map { $0.ISO8601Format() }, lastErrorClass: token.status.lastErrorClass, error: nil,
            openSessions: token.statistics.openSessions, breakerOpen: token.statistics.breakerOpen,
            probesWhileOut: token.status.probesWhileOut, lastProbe: token.status.lastProbe.map { $0.ISO8601Format() }
        )
    }

    /// Each configured token on a pool of its own, when the pool over all of them did not start
    /// (every token must start for it to): which ones answer, and why the others do not.
    static func eachToken(_ configuration: HSMConfiguration, firstModule: PKCS11Module) async -> [Report.ConfiguredToken] {
        var tokens = [Report.ConfiguredToken]()
        for (index, token) in configuration.tokenConfigurations.enumerated() {
            do {
                let options = index == 0 ? CustosRuntime.Options.cli(module: firstModule) : .cli()
                tokens.append(try await CustosRuntime.withPool(token, options: options) { pool in configuredToken(pool.tokenHealth[0]) })
            } catch {
                tokens.append(Report.ConfiguredToken(
                    label: token.token.name, module: token.modulePath, inService: false, outOfServiceSince: nil,
                    lastErrorClass: (error as? HSMError)?.failureClass ?? "\(type(of: error))", error: String(describing: error),
                    openSessions: nil, breakerOpen: nil, probesWhileOut: 0, lastProbe: nil
                ))
            }
        }
        return tokens
    }
}

struct HSMSelfTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Known-answer tests of every HSM operation Custos uses (local)."
    )

    @OptionGroup var options: LocalOptions
    @Option(help: "Output format.") var output: OutputFormat = .table

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let results = try await CustosRuntime.withPool(configuration, options: .cli()) { await SelfTest.run(on: $0) }
        switch output {
        case .json:
            print(try encodeJSON(results))
        case .table:
            for result in results {
                print("\(result.passed ? "pass" : "FAIL")  \(result.name)\(result.passed ? "" : " [needed for \(result.neededFor.rawValue)]: \(result.detail)")")
            }
            print("\(results.filter(\.passed).count) passed, \(results.filter { !$0.passed }.count) failed")
        }
        if results.contains(where: { !$0.passed }) { throw ExitCode(1) }
    }
}

struct HSMInitTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-token",
        abstract: "Initialise a token and its user PIN if no token has this label (local).",
        discussion: "PINs are read from files with mode 0600, never from the command line."
    )

    @Option(help: "Absolute path of the PKCS#11 module.")
    var modulePath = "/usr/lib/softhsm/libsofthsm2.so"
    @Option(help: "Token label (at most 32 bytes).")
    var label: String
    @Option(help: "File holding the security officer PIN (mode 0600).")
    var soPINFile: String
    @Option(help: "File holding the user PIN (mode 0600).")
    var userPINFile: String

    func run() async throws {
        let soPIN = try PINSource.file(path: soPINFile).read()
        let userPIN = try PINSource.file(path: userPINFile).read()
        let module = try PKCS11Module(path: modulePath)
        switch try TokenProvisioning.initializeToken(module: module, label: label, securityOfficerPIN: soPIN, userPIN: userPIN) {
        case .created(let token):
            print("initialised token \(token.label) (serial \(token.serialNumber))")
        case .alreadyPresent(let token):
            print("token \(token.label) already present (serial \(token.serialNumber)); nothing to do")
        }
    }
}

struct HSMCheckRootKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-root-keys",
        abstract: "Check the token's root keys against the check values the database recorded (local: talks to the HSM and database directly).",
        discussion: """
        Refuses (exit 1, with the labels and check values that differ) a token that was not made \
        for this database, a token still holding the legacy single root KEK, a token without \
        root keys, or root keys no ceremony recorded (made with the user PIN); on the first check \
        of an installation records the check values. `custos serve` runs the same check at start-up.
        """
    )
    @OptionGroup var options: LocalOptions

    func run() async throws {
        let configuration = try options.loadConfiguration()
        try await CustosRuntime.run(configuration, options: .cli()) { context in
            let inventory = try await RootKeyInventory.read(from: context.pool)
            print("root keys match the database: \(inventory.entries.map(\.label).joined(separator: ", "))")
        }
    }
}

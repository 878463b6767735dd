import ArgumentParser
import CustosCommandLine
import Ceremony
import Composition
import Crypto
import Custody
import Foundation
import HSM
import PKCS11
import SecureMemory
import Storage

/// `custos ceremony …`: the key ceremony (DESIGN §11), run by the compliance team through
/// scripts/ceremony. Every subcommand talks to the HSM directly and appends to a transcript.
struct CeremonyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ceremony",
        abstract: "Key ceremony: root keys, custodian shares, signed transcript (local: talks to the HSM directly).",
        discussion: "PINs come from files (mode 0600) or the environment, never from the command line. Output files are never overwritten.",
        subcommands: [
            CeremonyInitTokenCommand.self, CeremonyGenerateRootCommand.self, CeremonyRestoreCommand.self,
            CeremonyVerifyCommand.self, CeremonyRotateRootCommand.self, CeremonyVerifyTranscriptCommand.self,
            CeremonyGenerateEscrowCommand.self, CeremonyRestoreWebhookKeysCommand.self,
        ]
    )
}

/// Who runs the step, who watches, and where the transcript is.
struct CeremonyOptions: ParsableArguments {
    @Option(name: .customLong("operator"), help: "Name of the operator running this step.")
    var operatorName: String

    @Option(name: .customLong("witness"), help: "Name of a witness (repeat for each; at least one).")
    var witnesses: [String] = []

    @Option(help: "Transcript file (JSON lines): created if missing, otherwise appended to.")
    var transcript: String

    func participants() throws -> CeremonyParticipants {
        try CeremonyParticipants(operatorName: operatorName, witnesses: witnesses)
    }
}

extension CustosConfiguration {
    /// SHA-256 of the configuration file as read, hex, for the transcript.
    var configHash: String {
        guard let data = FileManager.default.contents(atPath: source) else { return "unreadable" }
        return Hex.encode(SHA256.hash(data: data))
    }
}

/// Every ceremony step holds PINs, root-key material or custodian shares in memory: no core
/// file may catch them, and no other process of the user may attach. A step refuses to run
/// where the kernel does not grant both.
func lockDownCeremony() throws {
    let state = ProcessHygiene.lockDown()
    guard state.coreLimitZero, !state.dumpable else {
        throw LocalError.failed("cannot disable core dumps and ptrace for this process; refusing to run a ceremony step")
    }
}

/// Runs `body` with a started pool on the configured token and a ceremony for it, then records
/// the root keys `made` names (the ones this ceremony imported) in the database.
func withCeremony<R>(
    _ options: LocalOptions, _ ceremonyOptions: CeremonyOptions, made: (R) -> [String] = { _ in [] },
    _ body: (KeyCeremony, CustosConfiguration) async throws -> R
) async throws -> R {
    try lockDownCeremony()
    let configuration = try options.loadConfiguration()
    let participants = try ceremonyOptions.participants()
    return try await CustosRuntime.withPool(configuration, options: .cli()) { pool in
        let ceremony = KeyCeremony(pool: pool, participants: participants, configHash: configuration.configHash, logger: makeLogger())
        let result = try await body(ceremony, configuration)
        try await recordRootKeys(pool: pool, configuration: configuration, labels: Set(made(result)))
        return result
    }
}

/// Records the check values of the root keys labelled `labels` (those the ceremony made; every
/// root key when the database has recorded none yet) in the configured database (when there is
/// one), as its owner role (migration 31), so that the service later refuses a token that is not
/// this one (``RootKeyCheck``). Keys on the token the ceremony did not make stay unrecorded, and
/// the service refuses them. The ceremony's work is done by then: a database that cannot record
/// them yet (not migrated, not reachable, no owner password configured) gets a warning, and the
/// service's first start records them instead when nothing is recorded yet.
func recordRootKeys(pool: SessionPool, configuration: CustosConfiguration, labels: Set<String>) async throws {
    guard configuration.postgres != nil else { return }
    // Also a configuration without the owner's password (helper-69): the step's work is done.
    do {
        try await CustosRuntime.withDatabase(configuration, role: .owner, options: .cli()) { database in
            try await RootKeyCheck.record(try await RootKeyInventory.read(from: pool), labels: labels, in: database)
        }
    } catch CustodyError.rootKeysDoNotMatch(let mismatches) {
        // Not "records them later": the database vouches for other keys, and start will refuse.
        throw CustodyError.rootKeysDoNotMatch(mismatches)
    } catch {
        FileHandle.standardError.write(Data("warning: root-key check values not recorded in the database (\(error)); the first `custos hsm check-root-keys` or start records them\n".utf8))
    }
}

struct CeremonyInitTokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init-token",
        abstract: "Initialise a fresh token and its user PIN; refuses an existing label (local: talks to the HSM directly)."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(help: "Token label (at most 32 bytes; default: the configured token label).")
    var label: String?
    @Option(help: "File holding the security officer PIN (mode 0600).")
    var soPINFile: String?
    @Option(help: "Environment variable holding the security officer PIN (instead of --so-pin-file).")
    var soPINEnv: String?

    func run() async throws {
        try lockDownCeremony()
        let configuration = try options.loadConfiguration()
        let poolConfiguration = try configuration.poolConfiguration()
        let soPIN: PINSource
        if let soPINEnv { soPIN = .environment(name: soPINEnv) } else if let soPINFile { soPIN = .file(path: soPINFile) } else {
            throw ValidationError("give --so-pin-file or --so-pin-env")
        }
        let module = try PKCS11Module(path: poolConfiguration.modulePath, initArguments: poolConfiguration.initArguments)
        let token = try await KeyCeremony.initToken(
            module: module, label: label ?? configuration.hsm.tokenLabel, securityOfficerPIN: soPIN, userPIN: poolConfiguration.userPIN,
            participants: try ceremony.participants(), configHash: configuration.configHash,
            transcript: CeremonyTranscript(path: ceremony.transcript)
        )
        print("initialised token \(token.label) (serial \(token.serialNumber)); transcript \(ceremony.transcript)")
    }
}

struct CeremonyGenerateRootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-root",
        abstract: "Generate the root KEKs (one per key purpose) and MAC key, split them M-of-N into one share set, import them (local: talks to the HSM directly)."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(help: "M: shares needed to restore.") var threshold: Int
    @Option(help: "N: shares written, one per custodian.") var shares: Int
    @Option(help: "Directory for the share files (must exist).") var output: String
    @Flag(help: "Do nothing when the token already holds root keys (for set-up scripts).") var ifMissing = false

    func run() async throws {
        let outcome: KeyCeremony.Outcome? = try await withCeremony(options, ceremony, made: { $0?.keys.map(\.label) ?? [] }) { ceremony, _ in
            if ifMissing, !(try await RootKeyInventory.read(from: ceremony.pool).entries.isEmpty) { return nil }
            return try await ceremony.generateRoot(threshold: threshold, shares: shares, outputDirectory: output, transcript: CeremonyTranscript(path: self.ceremony.transcript))
        }
        guard let outcome else {
            print("the token holds root keys already; nothing generated")
            return
        }
        print("ceremony \(outcome.ceremonyID): \(threshold)-of-\(shares) shares")
        for path in outcome.sharePaths { print("  share file \(path)") }
        for key in outcome.keys { print("  \(key.label)  KCV \(key.checkValue)  CKA_ID \(key.id)") }
    }
}

struct CeremonyRestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Rebuild root keys from M share files into a fresh token (local: talks to the HSM directly)."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(name: .customLong("share"), help: "A share file (repeat for each custodian present).") var shares: [String] = []

    func run() async throws {
        let outcome = try await withCeremony(options, ceremony, made: { $0.keys.map(\.label) }) { ceremony, _ in
            try await ceremony.restore(sharePaths: shares, transcript: CeremonyTranscript(path: self.ceremony.transcript))
        }
        print("restored from ceremony \(outcome.ceremonyID) with \(shares.count) shares")
        for key in outcome.keys { print("  \(key.label)  KCV \(key.checkValue)  CKA_ID \(key.id)") }
    }
}

struct CeremonyVerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare the token's root-key KCVs with a transcript or a share file (local: talks to the HSM directly)."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(help: "Compare against this share file's recorded KCVs instead of the transcript's.") var share: String?
    @Option(help: "Output format.") var output: OutputFormat = .table

    func run() async throws {
        let comparisons = try await withCeremony(options, ceremony) { ceremony, _ in
            let transcript = CeremonyTranscript(path: self.ceremony.transcript)
            let expected: [String: String]
            if let share {
                expected = try KeyCeremony.expectedCheckValues(shareFile: share)
            } else {
                expected = try await ceremony.expectedCheckValues(transcript: transcript)
            }
            return try await ceremony.verify(expected: expected, transcript: transcript)
        }
        switch output {
        case .json: print(try encodeJSON(comparisons))
        case .table:
            for item in comparisons {
                let verdict = item.expected == nil ? "extra" : item.matches ? "match" : "MISMATCH"
                print("\(verdict.padding(toLength: 9, withPad: " ", startingAt: 0)) \(item.label)  recorded \(item.expected ?? "-")  token \(item.actual ?? "missing")")
            }
        }
        if comparisons.contains(where: { $0.expected != nil && !$0.matches }) { throw ExitCode(1) }
    }
}

struct CeremonyRotateRootCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-root",
        abstract: "New root KEKs with new M-of-N shares; re-wrap every tenant key under them (local: talks to the HSM and database directly).",
        discussion: """
        The token's KEKs never unwrap a readable key, so the current KEKs are rebuilt from their \
        custodians' shares (--old-share, M files of the share set that made them) as session-only \
        keys of this process. On an installation still on the legacy single KEK, no shares are \
        needed: every key moves to per-purpose KEKs and the legacy KEK is destroyed.
        """
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(help: "M: shares needed to restore the new KEKs.") var threshold: Int?
    @Option(help: "N: shares written.") var shares: Int?
    @Option(help: "Directory for the new share files (must exist).") var output: String?
    @Option(name: .customLong("old-share"), help: "A share file of the current root KEKs (repeat for each custodian present).") var oldShares: [String] = []
    @Flag(help: "Only finish re-wrapping under the newest KEKs (after an interrupted rotation).") var resume = false

    func run() async throws {
        try lockDownCeremony()
        let configuration = try options.loadConfiguration()
        let participants = try ceremony.participants()
        let transcript = CeremonyTranscript(path: ceremony.transcript)
        let shareSets = try groupedShareSets(oldShares)
        // The owner role records the new KEKs (the service role cannot: migration 31); connected
        // and read first, so a missing owner password stops the rotation before anything changes.
        let owner = try Database(configuration: try configuration.databaseConfiguration(role: .owner), logger: makeLogger())
        owner.start()
        do {
            _ = try await RootKeyCheck.recorded(in: owner)
            try await rotate(configuration, participants: participants, transcript: transcript, shareSets: shareSets, owner: owner)
        } catch {
            await owner.shutdown()
            throw error
        }
        await owner.shutdown()
    }

    private func rotate(
        _ configuration: CustosConfiguration, participants: CeremonyParticipants, transcript: CeremonyTranscript, shareSets: [[String]], owner: Database
    ) async throws {
        try await CustosRuntime.run(configuration, options: .cli(verifyRootKeys: false)) { context in
            let keyCeremony = KeyCeremony(
                pool: context.pool, participants: participants, configHash: configuration.configHash, logger: makeLogger(),
                stepFault: .crashPointFromEnvironment
            )
            if resume {
                let (version, report, destroyed) = try await keyCeremony.resumeRewrap(
                    transcript: transcript, keyring: context.keyring, recordingIn: owner, currentShares: shareSets
                )
                print("re-wrapped \(report.rewrapped) key versions under root KEK v\(version) (\(report.alreadyCurrent) already there, \(report.resealed) resealed)")
                if !destroyed.isEmpty { print("destroyed the legacy root KEK: \(destroyed.joined(separator: ", "))") }
                try await reportUnrecordedRootKeys(context)
                return
            }
            guard let threshold, let shares, let output else { throw ValidationError("give --threshold, --shares and --output (or --resume)") }
            let rotation = try await keyCeremony.rotateRoot(
                threshold: threshold, shares: shares, outputDirectory: output, transcript: transcript, keyring: context.keyring,
                recordingIn: owner, currentShares: shareSets
            )
            // rotateRoot recorded the new KEKs itself, before moving any row.
            print("root KEKs v\(rotation.newKEKVersion): ceremony \(rotation.generated.ceremonyID), \(threshold)-of-\(shares) shares")
            for path in rotation.generated.sharePaths { print("  share file \(path)") }
            for key in rotation.generated.keys { print("  \(key.label)  KCV \(key.checkValue)  CKA_ID \(key.id)") }
            print("re-wrapped \(rotation.rewrap.rewrapped) key versions of \(rotation.rewrap.tenants) tenants (\(rotation.rewrap.resealed) resealed); \(rotation.rewrap.withoutBlob) without a blob keep naming the old version")
            if !rotation.destroyedLegacyKEKs.isEmpty { print("destroyed the legacy root KEK: \(rotation.destroyedLegacyKEKs.joined(separator: ", "))") }
            try await reportUnrecordedRootKeys(context)
        }
    }

    /// Names the root keys on the token that the database never recorded: never used (a set
    /// planted with the user PIN, or one a rotate-root imported before it was interrupted), so
    /// a resume that needed them says why it did not re-wrap under them.
    private func reportUnrecordedRootKeys(_ runtime: CustosRuntime) async throws {
        let recorded = try await runtime.keyring.recordedRootKeys()
        let unused = try await RootKeyInventory.read(from: runtime.pool).entries.map(\.label).filter { recorded[$0] == nil }.sorted()
        guard !unused.isEmpty else { return }
        print("""
            left unused: root keys on the token that the database never recorded: \(unused.joined(separator: ", ")). \
            If a rotate-root was interrupted after importing them, run rotate-root --resume again with M of that set's \
            share files as well (docs/ceremony.md, "If rotate-root is interrupted"); if nobody made them, investigate.
            """)
    }

    /// Share files grouped by the ceremony that made them (one set each).
    private func groupedShareSets(_ paths: [String]) throws -> [[String]] {
        var sets = [String: [String]]()
        for path in paths { sets[try ShareFile.read(from: path).header.ceremonyID, default: []].append(path) }
        return sets.keys.sorted().map { sets[$0]! }
    }
}

struct CeremonyVerifyTranscriptCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify-transcript",
        abstract: "Recompute a transcript's hash chain and HSM MACs; report the first bad line (local: talks to the HSM directly)."
    )
    @OptionGroup var options: LocalOptions
    @Option(help: "Transcript file.") var transcript: String
    @Option(help: "Output format.") var output: OutputFormat = .table

    func run() async throws {
        try lockDownCeremony()
        let configuration = try options.loadConfiguration()
        let file = CeremonyTranscript(path: transcript)
        let result = try await CustosRuntime.withPool(configuration, options: .cli()) { try await file.verify(pool: $0) }
        switch output {
        case .json: print(try encodeJSON(result))
        case .table:
            if result.isIntact {
                let anchor = result.anchoredLine.map { "the token anchored line \($0)" } ?? "this token holds no anchor for it (restored token?)"
                print("transcript intact: \(result.entries) entries, chain and MACs verified; \(anchor)")
            } else {
                print("transcript BROKEN at line \(result.firstBadLine.map(String.init) ?? "?"): \(result.problem ?? "")")
            }
        }
        if !result.isIntact { throw ExitCode(1) }
    }
}

struct CeremonyGenerateEscrowCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-escrow",
        abstract: "Make the escrow key for Ed25519 webhook seeds: private half split M-of-N, public half pinned in the database under an HSM MAC (local: talks to the HSM and database directly).",
        discussion: "Until it exists the service refuses new v1a (Ed25519) webhook keys. The private half is never stored: only the share files hold it."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(help: "M: shares needed to restore escrowed keys.") var threshold: Int
    @Option(help: "N: shares written, one per custodian.") var shares: Int
    @Option(help: "Directory for the share files (must exist).") var output: String
    @Flag(help: "Do nothing when the database pins an escrow key already (for set-up scripts).") var ifMissing = false

    func run() async throws {
        try lockDownCeremony()
        let configuration = try options.loadConfiguration()
        let participants = try ceremony.participants()
        let outcome = try await CustosRuntime.run(configuration, options: .cli()) { context -> EscrowGeneration in
            // Rows, not the tokens' pin: a database dropped or restored from an older backup
            // (the token keeps its pin) gets a new escrow key, above the pinned version.
            if ifMissing, let newest = try await context.keyring.verifiedEscrowKeys().max(by: { $0.version < $1.version }) {
                return .present(version: newest.version, fingerprint: EscrowKeyFingerprint(publicKey: newest.publicKey))
            }
            return .generated(try await KeyCeremony(pool: context.pool, participants: participants, configHash: configuration.configHash, logger: makeLogger())
                .generateEscrow(
                    threshold: threshold, shares: shares, outputDirectory: output, transcript: CeremonyTranscript(path: ceremony.transcript),
                    keyring: context.keyring
                ))
        }
        // The fingerprint line is the same either way: scripts/setup reads it into the config it writes.
        switch outcome {
        case .present(let version, let fingerprint):
            print("the database pins an escrow key already (v\(version)); nothing generated")
            print("fingerprint \(fingerprint)")
        case .generated(let outcome):
            print("escrow key v\(outcome.escrowKeyVersion) (check value \(outcome.checkValue)): ceremony \(outcome.ceremonyID), \(threshold)-of-\(shares) shares")
            for path in outcome.sharePaths { print("  share file \(path)") }
            print("fingerprint \(outcome.fingerprint)")
            print("no Ed25519 seed is sealed to it until config.json lists it on every instance (then restart): \"webhookEscrowKeys\": [\"\(outcome.fingerprint)\"]")
        }
    }

    /// A new escrow key, or (`--if-missing`) the newest one already recorded.
    enum EscrowGeneration {
        case generated(KeyCeremony.EscrowOutcome)
        case present(version: Int, fingerprint: EscrowKeyFingerprint)
    }
}

struct CeremonyRestoreWebhookKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-webhook-keys",
        abstract: "Import every escrowed Ed25519 webhook key onto each configured token that lacks it, from M shares of the escrow key (local: talks to the HSM and database directly).",
        discussion: "Run after `ceremony restore` made a replacement token. Idempotent: keys a token holds already are left as they are. Exits 1 when any key was refused."
    )
    @OptionGroup var options: LocalOptions
    @OptionGroup var ceremony: CeremonyOptions
    @Option(name: .customLong("share"), help: "A share file of the escrow key (repeat for each custodian present).") var shares: [String] = []
    @Option(help: "Output format.") var output: OutputFormat = .table

    func run() async throws {
        try lockDownCeremony()
        let configuration = try options.loadConfiguration()
        let participants = try ceremony.participants()
        let report = try await CustosRuntime.run(configuration, options: .cli()) { context in
            try await KeyCeremony(
                pool: context.pool, participants: participants, configHash: configuration.configHash, logger: makeLogger(),
                stepFault: .crashPointFromEnvironment
            )
                .restoreWebhookKeys(
                    sharePaths: shares, transcript: CeremonyTranscript(path: ceremony.transcript), keyring: context.keyring,
                    actor: "ceremony:\(participants.operatorName)"
                )
        }
        switch output {
        case .json: print(try encodeJSON(report))
        case .table:
            print("imported \(report.imported.count), already on every token \(report.alreadyPresent.count), escrowed to another escrow key \(report.otherEscrowKey.count), refused \(report.refused.count)")
            for name in report.imported { print("  imported  \(name)") }
            for name in report.otherEscrowKey { print("  other key \(name)") }
            for reason in report.refused { print("  REFUSED   \(reason)") }
        }
        if !report.refused.isEmpty { throw ExitCode(1) }
    }
}

public import ArgumentParser
import CustosCommandLine
import Composition
public import CustosModel
import Foundation
import HSM
import SecureMemory
import TokenizationEvaluation
import Verification
import Tokenization

extension IndexOfMaxHashing.ProjectionKind: ExpressibleByArgument {}

extension BiometricTokenFormat: ExpressibleByArgument {
    public init?(argument: String) {
        guard let format = Self.allCases.first(where: { $0.name == argument }) else { return nil }
        self = format
    }
}

struct EvalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy and unlinkability of the biometric tokens (local; fixed test keys on the local token).",
        subcommands: [Run.self, Synth.self],
        defaultSubcommand: Run.self
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Evaluate raw cosine against protected tokens on a labelled CSV (label,f1,…,fd per line)."
        )
        @OptionGroup var options: LocalOptions
        @Option(help: "Labelled embeddings, CSV without header.") var embeddings: String
        @Option(help: "Projection: structured (default) or dense-gaussian.") var projection: IndexOfMaxHashing.ProjectionKind = .structured
        @Option(help: "Output format.") var output: OutputFormat = .table
        @Option(help: "Target false-match rates to print thresholds for, comma-separated.") var fmr = "1e-4,1e-2"
        @Option(help: "Token format: compact (default, 8 bits per position) or wide (32 bits, bio versions made before it).")
        var tokenFormat: BiometricTokenFormat = .default
        @Option(help: "Evaluate a shape no format has (instead of --token-format): m positions, with --bits; q from --symbols (default 16).") var positions: Int?
        @Option(help: "Bits kept of each position's PRF output (1–32), with --positions.") var bits: Int?
        @Option(help: "Projections per symbol q (a power of two, 2–128), with --positions.") var symbols = 16

        /// The shape asked for with `--positions` and `--bits`, if any.
        func requestedShape() throws -> BiometricTokenShape? {
            switch (positions, bits) {
            case (nil, nil): return nil
            case (let positions?, let bits?):
                guard let shape = BiometricTokenShape(positions: positions, symbolsPerPosition: symbols, bitsPerValue: bits) else {
                    throw LocalError.failed(
                        "no token shape m = \(positions), q = \(symbols), b = \(bits): q must be a power of two from 2 to 128, m·q a multiple of 1,024, m at most 65,536, b from 1 to 32 and m·b a multiple of 64"
                    )
                }
                return shape
            default: throw LocalError.failed("--positions and --bits go together")
            }
        }

        func run() async throws {
            ProcessHygiene.lockDown()
            let targets: FalseMatchRateTargets
            do { targets = try FalseMatchRateTargets(parsing: fmr) } catch { throw LocalError.failed(error.description) }
            let shape = try requestedShape()
            let set = try LabelledEmbeddings(contentsOfFile: embeddings)
            let configuration = try options.loadConfiguration()
            let defaults = DecisionThresholds.default(for: tokenFormat)
            let report = try await CustosRuntime.withPool(configuration, options: .cli()) { pool in
                try await ProtectedEvaluation.run(
                    set, pool: pool, kind: projection, format: tokenFormat, shape: shape, falseMatchRates: targets.rates,
                    decisionThresholds: (defaults.green, defaults.amber)
                )
            }
            switch output {
            case .json:
                print(try encodeJSON(report))
            case .table:
                func pct(_ value: Double) -> String { String(format: "%.3f %%", value * 100) }
                print("""
                \(report.samples) samples, \(report.identities) identities, d = \(report.dimension), projection \(report.projection), \(report.token_format) tokens (m = \(report.positions), q = \(report.symbols_per_position), \(report.bits_per_value) bits, \(report.token_bytes) bytes; \(String(format: "%.0f", report.tokenization_us)) µs per tokenization)
                \(report.genuine_pairs) genuine and \(report.impostor_pairs) impostor pairs
                                     raw cosine     protected
                EER                  \(pct(report.raw_eer).padding(toLength: 14, withPad: " ", startingAt: 0)) \(pct(report.protected_eer))
                FNMR @ FMR 1e-3      \(pct(report.raw_fnmr_at_fmr_1e_3).padding(toLength: 14, withPad: " ", startingAt: 0)) \(pct(report.protected_fnmr_at_fmr_1e_3))
                FNMR @ FMR 1e-4      \(pct(report.raw_fnmr_at_fmr_1e_4).padding(toLength: 14, withPad: " ", startingAt: 0)) \(pct(report.protected_fnmr_at_fmr_1e_4))
                unlinkability D↔sys  \(String(format: "%.4f", report.dsys)) (two keys; 0 = unlinkable)
                renewability         same sample, old vs new key: mean \(String(format: "%.4f", report.renewability_mean)), max \(String(format: "%.4f", report.renewability_max)) (impostors under one key: mean \(String(format: "%.4f", report.protected_impostor_mean)))
                """)
                print(Self.thresholdTable(report))
            }
        }
    }

    struct Synth: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a realistic synthetic labelled set (CSV) for `custos-bench eval`.")
        @Option(help: "Output file (never overwritten).") var out: String
        @Option(help: "Identities.") var identities = 200
        @Option(help: "Samples per identity.") var samples = 10
        @Option(help: "Dimension (128, 256, 512 or 1024).") var dimension = 512
        @Option(help: "Seed.") var seed: UInt64 = 1
        @Option(help: "Noise model: standard (the accuracy targets' set) or realistic (the score tails of real face embeddings; docs/tokenization.md).")
        var profile: SyntheticEmbeddings.Profile = .standard

        func run() throws {
            guard !FileManager.default.fileExists(atPath: out) else { throw LocalError.failed("\(out) exists; not overwriting it") }
            let set = SyntheticEmbeddings(configuration: profile.configuration(identities: identities, samplesPerIdentity: samples, dimension: dimension, seed: seed))
            guard FileManager.default.createFile(atPath: out, contents: Data(set.csv().utf8)) else { throw LocalError.failed("cannot write \(out)") }
            print("wrote \(identities * samples) samples of \(identities) identities, d = \(dimension), profile \(profile.rawValue), to \(out)")
        }
    }
}

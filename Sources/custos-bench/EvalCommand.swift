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
        switch argument {
        case "wide": self = .wide
        case "compact": self = .compact
        default: return nil
        }
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

        func run() async throws {
            ProcessHygiene.lockDown()
            let targets: FalseMatchRateTargets
            do { targets = try FalseMatchRateTargets(parsing: fmr) } catch { throw LocalError.failed(error.description) }
            let set = try LabelledEmbeddings(contentsOfFile: embeddings)
            let configuration = try options.loadConfiguration()
            let defaults = DecisionThresholds.default
            let report = try await CustosRuntime.withPool(configuration, options: .cli()) { pool in
                try await ProtectedEvaluation.run(
                    set, pool: pool, kind: projection, format: tokenFormat, falseMatchRates: targets.rates,
                    decisionThresholds: (defaults.green, defaults.amber)
                )
            }
            switch output {
            case .json:
                print(try encodeJSON(report))
            case .table:
                func pct(_ value: Double) -> String { String(format: "%.3f %%", value * 100) }
                print("""
                \(report.samples) samples, \(report.identities) identities, d = \(report.dimension), projection \(report.projection), \(report.token_format) tokens
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

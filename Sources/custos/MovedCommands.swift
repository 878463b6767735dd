import ArgumentParser
import CustosCommandLine

// `custos bench …` and `custos eval …` left the production executable with the fixed evaluation
// keys (issue 10). Hidden, these only say where each went (exit 1, as a local error) instead of
// ArgumentParser's bare "unexpected argument"; the arguments are not echoed.

struct MovedBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", shouldDisplay: false)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []

    func run() throws {
        throw LocalError.failed("`custos bench` moved to its own executable: run `custos-bench pool|custody|biometric|rpc` (same flags)")
    }
}

struct MovedEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", shouldDisplay: false)
    @Argument(parsing: .captureForPassthrough) var arguments: [String] = []

    func run() throws {
        throw LocalError.failed("`custos eval` moved to its own executable: run `custos-bench eval` (same flags)")
    }
}

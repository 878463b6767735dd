import ArgumentParser

struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks (local; build with -c release, as scripts/bench does).",
        subcommands: [PoolBenchCommand.self, CustodyBenchCommand.self, BiometricBenchCommand.self, RPCBenchCommand.self]
    )
}

import ArgumentParser

/// Benchmarks and the biometric evaluation, apart from the production `custos` executable (the
/// evaluation tokenizes with fixed test keys, which a production build must not be able to do).
@main
struct CustosBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "custos-bench",
        abstract: "Benchmarks and evaluation (local; build with -c release, as scripts/bench does).",
        discussion: """
        Every command talks to the HSM (and the database) directly, with the configuration that \
        scripts/setup wrote (.custos/config.json, --config or CUSTOS_CONFIG), through the same \
        runtime as `custos serve`. Exit codes: 0 ok, 1 local error.
        """,
        subcommands: [PoolBenchCommand.self, CustodyBenchCommand.self, BiometricBenchCommand.self, RPCBenchCommand.self, EvalCommand.self, BareServerCommand.self, TenantScaleBenchCommand.self, GalleryBenchCommand.self, FailoverBenchCommand.self, TokenFailoverBenchCommand.self]
    )
}

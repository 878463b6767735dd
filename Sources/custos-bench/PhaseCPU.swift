import RPC

/// CPU seconds the processes of a phase had used at one of its edges: the server (the service,
/// or the bare server in the bare phase), this load generator, and PostgreSQL when its
/// cluster runs on this machine. Two readings give CPU per call by process, which says what
/// bounds a rate when every process shares the same cores (docs/benchmarks.md, "CPU per call").
struct PhaseCPU {
    var server: Double
    var loadGenerator: Double
    var postgres: Double?

    /// Now, with the server's figure read by the caller (nil: the server does not export it,
    /// or it is this process, and then no figure is reported).
    static func now(server: Double?, postmaster: Int32?) -> PhaseCPU? {
        guard let server else { return nil }
        return PhaseCPU(server: server, loadGenerator: ProcessCPUTime.seconds(), postgres: postmaster.flatMap(ProcessTreeCPU.postgresSeconds))
    }

    /// What was spent from `start` to `self`.
    func since(_ start: PhaseCPU) -> PhaseCPU {
        PhaseCPU(
            server: server - start.server, loadGenerator: loadGenerator - start.loadGenerator,
            postgres: postgres.flatMap { end in start.postgres.map { end - $0 } }
        )
    }

    static func + (lhs: PhaseCPU, rhs: PhaseCPU) -> PhaseCPU {
        PhaseCPU(
            server: lhs.server + rhs.server, loadGenerator: lhs.loadGenerator + rhs.loadGenerator,
            postgres: lhs.postgres.flatMap { left in rhs.postgres.map { left + $0 } }
        )
    }

    /// Per call answered, in µs, and how many cores the three kept busy on average.
    func perCall(calls: Int, seconds: Double) -> RPCBenchCommand.Report.CPUPerCall? {
        guard calls > 0, seconds > 0 else { return nil }
        func micros(_ value: Double) -> Double { RPCBenchCommand.rounded(value * 1e6 / Double(calls), 1) }
        let total = server + loadGenerator + (postgres ?? 0)
        return .init(
            server: micros(server), load_generator: micros(loadGenerator), postgres: postgres.map(micros),
            total: micros(total), cores_busy: RPCBenchCommand.rounded(total / seconds, 2)
        )
    }
}

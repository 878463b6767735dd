import ArgumentParser
import Composition
import Custody
import CustosCommandLine
import CustosModel
import Foundation
import HSM
import Storage

/// `custos-bench tenants`: the service with many tenants and a bounded key cache. For each
/// tenant count it reports the time from a cold start to the first served call, the latency of
/// a tenant's first call (row read and MAC check, unwrap in the HSM, HMAC), and HMAC throughput
/// over working sets of half, once and twice the cache — the first being all hits (the
/// baseline), the last evicting and unwrapping on about every other call.
///
/// Tenants are stored in bulk: a few are created through custody, and the others get copies of
/// their API-key pepper rows, each with its own row MAC (`benchmarkCopy`). Key material repeats,
/// but the cache is per (tenant, purpose, version), so every tenant's first use unwraps for real.
struct TenantScaleBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tenants", abstract: "Many tenants, bounded key cache (local).")

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Tenant counts, comma-separated, ascending (tenants are added between runs).") var tenants = "10000,100000"
    @Option(help: "The pool's key cache bound for this run (hsm.maxCachedKeys).") var maxCachedKeys = HSMConfiguration.defaultMaxCachedKeys
    @Option(help: "Seconds per throughput phase.") var seconds: Double = 3
    @Option(help: "Concurrent tasks in the throughput phases.") var tasks = 32
    @Option(help: "Tenants whose first call is timed (one caller, in turn).") var firstCalls = 1000
    @Option(help: "Tenants created through custody whose rows the others copy.") var sources = 4

    struct Phase: Encodable {
        let working_set: Int
        let calls_per_s: Double
        let latency_us: BenchmarkLoop.Latency
        let evictions: Int
        let ratio_to_baseline: Double
    }

    struct Run: Encodable {
        let tenants: Int
        let populate_s: Double
        let startup_to_serving_ms: Double
        let runtime_assembled_ms: Double
        let overlap_closer_pass_ms: Double?
        let first_call_us: BenchmarkLoop.Latency
        let warm_call_us: BenchmarkLoop.Latency
        let baseline_all_hits: Phase
        let working_set_equals_cache: Phase
        let working_set_twice_cache: Phase
        let session_objects_held: Int
    }

    struct Report: Encodable {
        let max_cached_keys: Int
        let workers: Int
        let tasks: Int
        let seconds_per_phase: Double
        let runs: [Run]
    }

    func run() async throws {
        var configuration = try options.loadConfiguration()
        configuration.hsm.maxCachedKeys = maxCachedKeys
        let counts = tenants.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts == counts.sorted(), counts.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--tenants takes ascending positive counts, e.g. 10000,100000")
        }
        guard firstCalls + 2 * maxCachedKeys <= counts[0] else {
            throw ValidationError("the smallest tenant count must cover --first-calls plus twice --max-cached-keys")
        }
        let runID = String(UInt32.random(in: 0 ... .max), radix: 36)
        var population = [TenantID]()
        var runs = [Run]()
        for count in counts {
            let started = ContinuousClock.now
            population = try await populate(configuration, runID: runID, existing: population, to: count)
            let populated = BenchmarkLoop.microseconds(ContinuousClock.now - started) / 1e6
            let run = try await measure(configuration, population: population, populateSeconds: populated)
            // Each count's lines as soon as it is done: the 100k population takes minutes.
            if !json { print(line(run)) }
            runs.append(run)
        }
        let report = Report(
            max_cached_keys: maxCachedKeys, workers: try configuration.poolConfiguration().workers, tasks: tasks,
            seconds_per_phase: seconds, runs: runs
        )
        if json { print(try encodeJSON(report)) }
    }

    // MARK: Population

    /// Adds tenants (each with one active API-key pepper row) until there are `count`.
    private func populate(_ configuration: CustosConfiguration, runID: String, existing: [TenantID], to count: Int) async throws -> [TenantID] {
        try await CustosRuntime.run(configuration, options: .cli()) { runtime in
            let keyring = runtime.keyring, database = runtime.database
            var templates = [KeyVersionRecord]()
            for index in 0..<sources {
                let tenant = try await keyring.createTenant(label: "bs-\(runID)-src-\(existing.count)-\(index)", actor: "bench")
                let rows = try await database.withTenant(tenant.id, context: "bench: read source rows") { connection in
                    try await KeyVersionStore.versions(tenant.id, .apiKeyPepper, on: connection)
                }
                templates += rows.filter { $0.state == .active }
            }
            var population = existing
            // Small transactions: each must finish within the client's operation timeout.
            let chunk = 200
            var next = existing.count
            while next < count {
                let ids = (next..<min(next + chunk, count)).map { _ in TenantID.random() }
                let first = next
                let rows = try await withThrowingTaskGroup(of: KeyVersionRecord.self) { group in
                    for (offset, id) in ids.enumerated() {
                        let template = templates[(first + offset) % templates.count]
                        group.addTask { try await keyring.benchmarkCopy(of: template, for: id) }
                    }
                    return try await group.reduce(into: [KeyVersionRecord]()) { $0.append($1) }
                }
                try await database.withTransaction(context: "bench: store tenants") { connection in
                    for (offset, row) in rows.enumerated() {
                        _ = try await TenantStore.insert(id: row.tenant, label: "bs-\(runID)-\(first + offset)", on: connection)
                        try await connection.scope(to: row.tenant)
                        try await KeyVersionStore.insert(row, on: connection)
                    }
                }
                population += rows.map(\.tenant)
                next += ids.count
            }
            return population
        }
    }

    // MARK: Measurement

    private func measure(_ configuration: CustosConfiguration, population: [TenantID], populateSeconds: Double) async throws -> Run {
        let data = [UInt8](repeating: 0x61, count: 32)
        let startTime = ContinuousClock.now
        return try await CustosRuntime.run(configuration, options: .cli()) { runtime in
            let assembled = ContinuousClock.now
            let keyring = runtime.keyring, pool = runtime.pool
            // Serving: the first call of a tenant nobody used yet, from a cold process.
            let (firstKey, _) = try await keyring.key(population[0], .apiKeyPepper)
            _ = try await pool.hmacSHA256(key: firstKey, data: data)
            let serving = ContinuousClock.now

            // What `serve` starts in the background for every tenant: one overlap-closer pass
            // (two transactions per tenant); timed up to 10,000 tenants only.
            var closerPass: Double?
            if population.count <= 10_000 {
                let before = ContinuousClock.now
                _ = try await keyring.closeEndedBiometricOverlaps()
                closerPass = BenchmarkLoop.microseconds(ContinuousClock.now - before) / 1000
            }

            // First calls, one caller: row read, MAC check, unwrap, HMAC; then at once the same
            // tenant's second call (row and handle cached) for comparison.
            let sample = Array(population[1...firstCalls])
            var first = [Double](), warm = [Double]()
            for tenant in sample {
                for pass in 0..<2 {
                    let before = ContinuousClock.now
                    let (key, _) = try await keyring.key(tenant, .apiKeyPepper)
                    _ = try await pool.hmacSHA256(key: key, data: data)
                    let elapsed = BenchmarkLoop.microseconds(ContinuousClock.now - before)
                    if pass == 0 { first.append(elapsed) } else { warm.append(elapsed) }
                }
            }

            // Throughput over working sets of tenants not used above, HSM keys looked up once.
            let working = Array(population[(firstCalls + 1)...].prefix(2 * maxCachedKeys))
            var keys = [HSMKey]()
            for tenant in working { keys.append(try await keyring.key(tenant, .apiKeyPepper).key) }
            let baseline = try await phase(pool, keys: Array(keys.prefix(max(1, maxCachedKeys / 2))), data: data, baseline: nil)
            let equal = try await phase(pool, keys: Array(keys.prefix(maxCachedKeys)), data: data, baseline: baseline.calls_per_s)
            let twice = try await phase(pool, keys: keys, data: data, baseline: baseline.calls_per_s)
            let held = pool.statistics.cachedSessionObjects

            return Run(
                tenants: population.count, populate_s: (populateSeconds * 10).rounded() / 10,
                startup_to_serving_ms: (BenchmarkLoop.microseconds(serving - startTime) / 10).rounded() / 100,
                runtime_assembled_ms: (BenchmarkLoop.microseconds(assembled - startTime) / 10).rounded() / 100,
                overlap_closer_pass_ms: closerPass.map { ($0 * 100).rounded() / 100 },
                first_call_us: BenchmarkLoop.percentiles(first), warm_call_us: BenchmarkLoop.percentiles(warm),
                baseline_all_hits: baseline, working_set_equals_cache: equal, working_set_twice_cache: twice,
                session_objects_held: held
            )
        }
    }

    /// Warms the working set once, then HMACs under keys drawn pseudo-randomly from it.
    private func phase(_ pool: SessionPool, keys: [HSMKey], data: [UInt8], baseline: Double?) async throws -> Phase {
        for key in keys { _ = try await pool.hmacSHA256(key: key, data: data) }
        let evictionsBefore = pool.statistics.keyEvictions
        let count = keys.count
        let result = try await BenchmarkLoop.measure(pool: pool, tasks: tasks, seconds: seconds) { index in
            // A multiplicative hash spreads each task's sequence over the whole set.
            let key = keys[Int((UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15) >> 33) % count]
            _ = try await pool.hmacSHA256(key: key, data: data)
        }
        return Phase(
            working_set: count, calls_per_s: result.rate.rounded(), latency_us: result.latency,
            evictions: pool.statistics.keyEvictions - evictionsBefore,
            ratio_to_baseline: baseline.map { ((result.rate / $0) * 1000).rounded() / 1000 } ?? 1
        )
    }

    private func line(_ run: Run) -> String {
        func phase(_ name: String, _ phase: Phase) -> String {
            "  \(name) (\(phase.working_set) keys): \(phase.calls_per_s) calls/s  p50 \(phase.latency_us.p50) µs  p99 \(phase.latency_us.p99) µs  evictions \(phase.evictions)  ratio \(phase.ratio_to_baseline)"
        }
        return """
        \(run.tenants) tenants (populated in \(run.populate_s) s)
          start-up to serving \(run.startup_to_serving_ms) ms (runtime assembled \(run.runtime_assembled_ms) ms), overlap-closer pass \(run.overlap_closer_pass_ms.map { "\($0) ms" } ?? "not timed")
          first call p50 \(run.first_call_us.p50) µs  p99 \(run.first_call_us.p99) µs; warm p50 \(run.warm_call_us.p50) µs  p99 \(run.warm_call_us.p99) µs
        \(phase("baseline, all hits", run.baseline_all_hits))
        \(phase("working set = cache", run.working_set_equals_cache))
        \(phase("working set = 2 × cache", run.working_set_twice_cache))
          session objects held \(run.session_objects_held)
        """
    }
}

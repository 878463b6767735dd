import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import HSM
import PKCS11

/// `custos-bench pool`: the pool's overhead over raw PKCS#11.
///
/// In one run on one token, alternating phases so drift hits all alike:
/// - raw: N threads, each with its own session, HMAC-SHA256 of 64-byte messages under one
///   session-object key, in a tight loop (N = the pool's workers);
/// - pool: T tasks that prefer the pool's executor, each calling `pool.hmacSHA256` in a loop;
/// - hop: the same T tasks on Swift's default executor, so every call hops to a worker and back.
struct PoolBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pool", abstract: "Raw PKCS#11 HMAC loop vs the session pool (local).")

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Seconds per phase.") var seconds: Double = 2
    @Option(help: "Rounds of (raw, pool, hop); figures are the median round.") var rounds = 5
    @Option(help: "Concurrent tasks in the pool phases.") var tasks = 64
    @Option(help: "Phases to run (raw, pool, hop, empty), e.g. one alone for profiling.") var phases = "raw,pool,hop,empty"

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let poolConfiguration = try configuration.poolConfiguration()
        let workers = poolConfiguration.workers
        let report = try await CustosRuntime.withPool(poolConfiguration, options: .cli()) { pool in
            let key = HSMKey(id: "bench:hmac") { session in
                try session.generateKey(.genericSecretKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.hmac) + [.valueLength(32)])
            }
            let handle = try await pool.withSession { session in try session.handle(for: key) }
            let slot = try await pool.withSession { session in session.pkcs11.slot }
            let message = [UInt8](repeating: 0x5C, count: 64)

            var raw = [Phase](), preferred = [Phase](), hopping = [Phase](), empty = [Phase]()
            for _ in 0..<rounds {
                let selected = Set(phases.split(separator: ","))
                if selected.contains("raw") { raw.append(try runRaw(module: pool.module, slot: slot, key: handle, threads: workers, message: message)) }
                if selected.contains("pool") { preferred.append(try await runPool(pool, key: key, message: message, preferExecutor: true)) }
                if selected.contains("empty") { empty.append(try await runPool(pool, key: key, message: message, preferExecutor: true, empty: true)) }
                if selected.contains("hop") { hopping.append(try await runPool(pool, key: key, message: message, preferExecutor: false)) }
            }
            return Report(raw: raw, preferred: preferred, hopping: hopping, empty: empty, workers: workers, tasks: tasks, rounds: rounds, seconds: seconds)
        }
        if json {
            print(try encodeJSON(report))
        } else {
            print(report.text)
        }
    }

    // MARK: Phases

    struct Phase {
        var operations = 0
        var elapsed = 0.0
        var latencies = [UInt32]()
        var opsPerSecond: Double { Double(operations) / elapsed }
    }

    private func runRaw(module: PKCS11Module, slot: SlotID, key: ObjectHandle, threads: Int, message: [UInt8]) throws -> Phase {
        let results = ResultBox(count: threads)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let group = DispatchGroup()
        let start = DispatchTime.now().uptimeNanoseconds
        for index in 0..<threads {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                do {
                    let session = try module.openSession(slot: slot)
                    defer { try? session.close() }
                    var phase = Phase()
                    phase.latencies.reserveCapacity(400_000)
                    var now = DispatchTime.now().uptimeNanoseconds
                    while now < deadline {
                        _ = try session.sign(.sha256HMAC, key: key, data: message)
                        let after = DispatchTime.now().uptimeNanoseconds
                        phase.latencies.append(UInt32(clamping: after - now))
                        phase.operations += 1
                        now = after
                    }
                    results.set(index, phase)
                } catch {
                    results.fail(String(describing: error))
                }
            }
            thread.start()
        }
        group.wait()
        if let failure = results.failure { throw LocalError.failed("raw phase: \(failure)") }
        return merge(results.phases, elapsed: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    private func runPool(_ pool: SessionPool, key: HSMKey, message: [UInt8], preferExecutor: Bool, empty: Bool = false) async throws -> Phase {
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let start = DispatchTime.now().uptimeNanoseconds
        let body: @Sendable () async throws -> Phase = {
            var phase = Phase()
            phase.latencies.reserveCapacity(50_000)
            var now = DispatchTime.now().uptimeNanoseconds
            while now < deadline {
                if empty {
                    _ = try await pool.withSession { _ in 0 }
                } else {
                    _ = try await pool.hmacSHA256(key: key, data: message)
                }
                let after = DispatchTime.now().uptimeNanoseconds
                phase.latencies.append(UInt32(clamping: after - now))
                phase.operations += 1
                now = after
            }
            return phase
        }
        let phases = try await withThrowingTaskGroup(of: Phase.self) { group in
            for _ in 0..<tasks {
                if preferExecutor {
                    group.addTask(executorPreference: pool.executor, operation: body)
                } else {
                    group.addTask(operation: body)
                }
            }
            return try await group.reduce(into: [Phase]()) { $0.append($1) }
        }
        return merge(phases, elapsed: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    private func merge(_ phases: [Phase], elapsed: Double) -> Phase {
        var merged = Phase()
        merged.elapsed = elapsed
        for phase in phases {
            merged.operations += phase.operations
            merged.latencies += phase.latencies
        }
        return merged
    }

    // MARK: Report

    struct Report: Encodable {
        struct Latency: Encodable {
            let p50: Double
            let p99: Double
        }
        let raw_ops_per_s: Double
        let pool_ops_per_s: Double
        let ratio: Double
        let pool_hop_ops_per_s: Double
        let hop_ratio: Double
        let raw_rounds: [Double]
        let pool_rounds: [Double]
        let hop_rounds: [Double]
        /// `withSession` with an empty body on the preferred executor: the pool's own cost.
        let empty_calls_per_s: Double
        let overhead_ns_per_call: Double
        let latency_us: [String: Latency]
        let workers: Int
        let tasks: Int
        let rounds: Int
        let seconds_per_phase: Double

        init(raw: [Phase], preferred: [Phase], hopping: [Phase], empty: [Phase], workers: Int, tasks: Int, rounds: Int, seconds: Double) {
            raw_rounds = raw.map(\.opsPerSecond)
            pool_rounds = preferred.map(\.opsPerSecond)
            hop_rounds = hopping.map(\.opsPerSecond)
            raw_ops_per_s = median(raw_rounds)
            pool_ops_per_s = median(pool_rounds)
            pool_hop_ops_per_s = median(hop_rounds)
            ratio = pool_ops_per_s / raw_ops_per_s
            empty_calls_per_s = median(empty.map(\.opsPerSecond))
            overhead_ns_per_call = empty_calls_per_s > 0 ? 1e9 * Double(workers) / empty_calls_per_s : 0
            hop_ratio = pool_hop_ops_per_s / raw_ops_per_s
            latency_us = [
                "raw": Self.latency(raw), "pool": Self.latency(preferred), "hop": Self.latency(hopping),
            ]
            self.workers = workers
            self.tasks = tasks
            self.rounds = rounds
            seconds_per_phase = seconds
        }

        private static func latency(_ phases: [Phase]) -> Latency {
            var all = phases.flatMap(\.latencies)
            all.sort()
            guard !all.isEmpty else { return Latency(p50: 0, p99: 0) }
            func at(_ quantile: Double) -> Double { Double(all[min(all.count - 1, Int(Double(all.count) * quantile))]) / 1000 }
            return Latency(p50: at(0.5), p99: at(0.99))
        }

        var text: String {
            func format(_ value: Double) -> String { String(format: "%9.0f", value) }
            func latencyText(_ key: String) -> String {
                let latency = latency_us[key]!
                return String(format: "p50 %6.1f µs  p99 %7.1f µs", latency.p50, latency.p99)
            }
            return """
            HMAC-SHA256, 64-byte messages, session-object key; \(workers) workers, \(tasks) tasks, \(rounds) × \(seconds_per_phase) s per phase
            raw PKCS#11 (\(workers) threads)    \(format(raw_ops_per_s)) ops/s   \(latencyText("raw"))
            pool, executor preference  \(format(pool_ops_per_s)) ops/s   \(latencyText("pool"))   ratio \(String(format: "%.3f", ratio))
            pool, hop per call         \(format(pool_hop_ops_per_s)) ops/s   \(latencyText("hop"))   ratio \(String(format: "%.3f", hop_ratio))
            pool, empty body           \(format(empty_calls_per_s)) calls/s  (\(String(format: "%.0f", overhead_ns_per_call)) ns per call and worker, benchmark loop included)
            """
        }
    }
}

private func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// Per-thread results of the raw phase.
private final class ResultBox: @unchecked Sendable {
    // SAFETY: every field is accessed only while `lock` is held.
    private let lock = NSLock()
    private var storage: [PoolBenchCommand.Phase]
    private var firstFailure: String?

    init(count: Int) { storage = Array(repeating: .init(), count: count) }

    func set(_ index: Int, _ phase: PoolBenchCommand.Phase) { lock.withLock { storage[index] = phase } }
    func fail(_ message: String) { lock.withLock { if firstFailure == nil { firstFailure = message } } }
    var phases: [PoolBenchCommand.Phase] { lock.withLock { storage } }
    var failure: String? { lock.withLock { firstFailure } }
}

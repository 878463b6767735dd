import Foundation
import HSM

/// The closed loop the service benchmarks share: `tasks` tasks that prefer the pool's executor
/// (as request handlers will) repeat `operation` until the deadline; every call is timed.
enum BenchmarkLoop {
    struct Latency: Encodable {
        let p50: Double
        let p99: Double
    }

    /// - Returns: operations per second over the whole phase, and per-call latency in µs.
    static func measure(
        pool: SessionPool, tasks: Int, seconds: Double, _ operation: @escaping @Sendable (Int) async throws -> Void
    ) async throws -> (rate: Double, latency: Latency) {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
            for task in 0..<tasks {
                group.addTask(executorPreference: pool.executor) {
                    var latencies = [Double]()
                    var index = task
                    while ContinuousClock.now < deadline {
                        let before = ContinuousClock.now
                        try await operation(index)
                        latencies.append(microseconds(ContinuousClock.now - before))
                        index += tasks
                    }
                    return latencies
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }
        }
        return (Double(samples.count) / (microseconds(ContinuousClock.now - start) / 1e6), percentiles(samples))
    }

    /// p50 and p99 of `values`, rounded to two decimals.
    static func percentiles(_ values: [Double]) -> Latency {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return Latency(p50: 0, p99: 0) }
        func at(_ quantile: Double) -> Double {
            (sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))] * 100).rounded() / 100
        }
        return Latency(p50: at(0.5), p99: at(0.99))
    }

    static func microseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
    }
}

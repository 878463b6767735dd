import ArgumentParser
import CustosCommandLine
import Composition
import CustosModel
import Foundation
import SecureMemory
import Synchronization
import HSM
import TokenizationEvaluation
import Tokenization

/// `custos-bench biometric`: tokenizations per second (512-d) and the HSM's share of them,
/// 1:1 verifications per second (tokenize + compare), and 1:N identification latency over
/// 10k and 100k enrolled tokens (in-memory SIMD scan, top 5).
struct BiometricBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "biometric", abstract: "Tokenization and matching speed (local; fixed test keys).")

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Seconds per phase.") var seconds: Double = 2
    @Option(help: "Concurrent tasks.") var tasks = 16
    @Option(help: "Identification queries per gallery size.") var queries = 200

    typealias Latency = BenchmarkLoop.Latency

    struct Report: Encodable {
        let tokenizations_per_s: Double
        let tokenization_latency_us: Latency
        let hsm_prf_calls_per_s: Double
        let hsm_share: Double
        let verifications_1to1_per_s: Double
        let identify_10k_ms: Latency
        let identify_100k_ms: Latency
        let dimension: Int
        let workers: Int
        let tasks: Int
    }

    func run() async throws {
        ProcessHygiene.lockDown()
        let configuration = try options.loadConfiguration()
        let poolConfiguration = try configuration.poolConfiguration()
        let (tokenize, prf, verify) = try await CustosRuntime.withPool(poolConfiguration, options: .cli()) { pool in
            let tenant = ProtectedEvaluation.tenant
            let tokenizer = BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1]), kind: .structured)
            let set = SyntheticEmbeddings(configuration: .init(identities: 100, samplesPerIdentity: 2, dimension: 512, seed: 9))
            let vectors = try (0..<set.embeddings.count).map { try set.embeddings.featureVector(at: $0) }
            let enrolled = try await tokenizer.tokenize(vectors[0], tenant: tenant, version: 1)

            let tokenize = try await BenchmarkLoop.measure(pool: pool, tasks: tasks, seconds: seconds) { index in
                _ = try await tokenizer.tokenize(vectors[index % vectors.count], tenant: tenant, version: 1)
            }
            let prfKey = EvaluationKeys.keys(version: 1).prf
            let blocks = [UInt8](repeating: 0x42, count: PRFBlocks.byteCount(for: BiometricTokenFormat.default.shape))
            let prf = try await BenchmarkLoop.measure(pool: pool, tasks: tasks, seconds: seconds) { _ in _ = try await pool.encryptBlocksECB(key: prfKey, blocks: blocks) }
            let verify = try await BenchmarkLoop.measure(pool: pool, tasks: tasks, seconds: seconds) { index in
                let probe = try await tokenizer.tokenize(vectors[index % vectors.count], tenant: tenant, version: 1)
                _ = probe.score(against: enrolled)
            }
            return (tokenize, prf, verify)
        }

        // 1:N: galleries of random tokens (their content does not change the scan's cost).
        var generator = SystemRandomNumberGenerator()
        func gallery(_ size: Int) -> [BiometricToken] {
            (0..<size).map { _ in BiometricToken(keyVersion: 1, format: .default, values: (0..<BiometricTokenFormat.default.positions).map { _ in UInt32.random(in: 0 ... BiometricTokenFormat.default.maxValue, using: &generator) }) }
        }
        let identify10k = identify(gallery(10_000), probes: queries)
        let identify100k = identify(gallery(100_000), probes: queries)

        let report = Report(
            tokenizations_per_s: tokenize.rate, tokenization_latency_us: tokenize.latency, hsm_prf_calls_per_s: prf.rate,
            hsm_share: tokenize.rate / prf.rate, verifications_1to1_per_s: verify.rate,
            identify_10k_ms: identify10k, identify_100k_ms: identify100k, dimension: 512,
            workers: poolConfiguration.workers, tasks: tasks
        )
        if json {
            print(try encodeJSON(report))
        } else {
            print("""
            tokenize 512-d    \(Int(report.tokenizations_per_s)) /s  p50 \(report.tokenization_latency_us.p50) µs  p99 \(report.tokenization_latency_us.p99) µs  (HSM PRF alone \(Int(report.hsm_prf_calls_per_s)) calls/s: HSM share \(String(format: "%.0f", report.hsm_share * 100)) %)
            verify 1:1        \(Int(report.verifications_1to1_per_s)) /s
            identify 1:N      10k: p50 \(report.identify_10k_ms.p50) ms  p99 \(report.identify_10k_ms.p99) ms;  100k: p50 \(report.identify_100k_ms.p50) ms  p99 \(report.identify_100k_ms.p99) ms
            """)
        }
    }

    /// Scans the gallery on every core (one slice each) and keeps the top 5.
    private func identify(_ gallery: [BiometricToken], probes: Int) -> Latency {
        let cores = max(ProcessInfo.processInfo.activeProcessorCount, 1)
        var latencies = [Double]()
        for probeIndex in 0..<probes {
            let probe = gallery[(probeIndex * 7919) % gallery.count]
            let start = DispatchTime.now().uptimeNanoseconds
            let slice = (gallery.count + cores - 1) / cores
            let best = TopCandidates()
            DispatchQueue.concurrentPerform(iterations: cores) { core in
                var top = [(Int, Int)]()
                for index in (core * slice) ..< min(gallery.count, (core + 1) * slice) {
                    let matches = probe.matchingPositions(with: gallery[index])
                    if top.count < 5 || matches > top[top.count - 1].1 {
                        top.append((index, matches))
                        top.sort { $0.1 > $1.1 }
                        if top.count > 5 { top.removeLast() }
                    }
                }
                best.merge(top)
            }
            latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return BenchmarkLoop.percentiles(latencies)
    }

    /// The best candidates of every slice (merged by the caller after the scan).
    final class TopCandidates: Sendable {
        private let candidates = Mutex([(Int, Int)]())
        func merge(_ top: [(Int, Int)]) { candidates.withLock { $0 += top } }
    }
}

import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import Storage

/// `custos-bench custody`: API-key verifications and webhook signatures per second through the
/// pool with warm caches, the revocation delay between two instances, and — measured in the same
/// run as the baseline — the raw PKCS#11 HMAC rate for the same message sizes.
struct CustodyBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "custody", abstract: "API keys, webhooks, revocation delay (local).")

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Seconds per phase.") var seconds: Double = 2
    @Option(help: "Concurrent tasks.") var tasks = 32
    @Option(help: "Revocations to time.") var revocations = 40
    @Option(help: "Pairs of phases (key-use recording on, then off) per operation; 0 skips the comparison.") var recordingRounds = 3

    struct Report: Encodable {
        let raw_hmac_75b_ops_per_s: Double
        let apikey_verify_per_s: Double
        let apikey_ratio_to_raw: Double
        let apikey_latency_us: Latency
        let raw_hmac_1kib_ops_per_s: Double
        let webhook_sign_per_s: Double
        let webhook_ratio_to_raw: Double
        let webhook_latency_us: Latency
        let revocation_delay_ms: Latency
        let revocations: Int
        let workers: Int
        let tasks: Int
        let seconds_per_phase: Double
        /// API-key verification and webhook signing with key-use recording on and off.
        let recording: [RecordingComparison]
        /// One counter increment alone (wall time per call per thread).
        let key_use_counter: CounterCost
    }

    typealias Latency = BenchmarkLoop.Latency

    func run() async throws {
        let configuration = try options.loadConfiguration()
        let report = try await CustosRuntime.run(configuration, options: .cli()) { context in
            let tenant = try await context.keyring.createTenant(label: "bench-\(UInt32.random(in: 0 ... .max))", actor: "bench")
            let issued = try await context.apiKeys.issue(tenant: tenant.id, scopes: ["verify"], actor: "bench")
            _ = try await context.webhooks.createSecret(tenant: tenant.id, actor: "bench")
            let listener = Task { await context.apiKeys.runRevocationListener() }
            defer { listener.cancel() }
            while !context.apiKeys.isListening { try await Task.sleep(for: .milliseconds(5)) }

            // Baselines: raw HMAC in the HSM on as many threads as workers, same sizes.
            let workers = context.pool.configuration.workers
            let (pepper, _) = try await context.keyring.key(tenant.id, .apiKeyPepper)
            let handle = try await context.pool.withSession { session in try session.handle(for: pepper) }
            let slot = try await context.pool.withSession { session in session.pkcs11.slot }
            let keyLength = issued.key.count
            let rawSmall = try rawHMAC(module: context.pool.module, slot: slot, key: handle, threads: workers, length: keyLength)
            let rawLarge = try rawHMAC(module: context.pool.module, slot: slot, key: handle, threads: workers, length: 1024 + 40)

            // API-key verification, warm caches, from tasks that prefer the pool's executor.
            let key = issued.key
            let apiKeys = context.apiKeys
            _ = try await apiKeys.verify(key)
            let verify = try await BenchmarkLoop.measure(pool: context.pool, tasks: tasks, seconds: seconds) { _ in _ = try await apiKeys.verify(key) }

            let webhooks = context.webhooks
            let body = [UInt8](repeating: 0x7B, count: 1024)
            let tenantID = tenant.id
            _ = try await webhooks.signatureHeader(tenant: tenantID, id: "msg_bench", timestamp: 1_700_000_000, body: body)
            let sign = try await BenchmarkLoop.measure(pool: context.pool, tasks: tasks, seconds: seconds) { _ in
                _ = try await webhooks.signatureHeader(tenant: tenantID, id: "msg_bench", timestamp: 1_700_000_000, body: body)
            }

            // Key-use recording on and off, interleaved (the runtime's recorder writes the counts
            // to the audit log meanwhile, as in `serve`).
            let counter = context.keyring.keyUses
            let setRecording: (Bool) -> Void = { counter.isRecording = $0 }
            var recording = [RecordingComparison]()
            if recordingRounds > 0 {
                recording.append(try await RecordingComparison.measure("API-key verify", rounds: recordingRounds, secondsPerPhase: seconds, setRecording: setRecording) {
                    try await BenchmarkLoop.measure(pool: context.pool, tasks: tasks, seconds: seconds) { _ in _ = try await apiKeys.verify(key) }.rate
                })
                recording.append(try await RecordingComparison.measure("webhook sign 1 KiB", rounds: recordingRounds, secondsPerPhase: seconds, setRecording: setRecording) {
                    try await BenchmarkLoop.measure(pool: context.pool, tasks: tasks, seconds: seconds) { _ in
                        _ = try await webhooks.signatureHeader(tenant: tenantID, id: "msg_bench", timestamp: 1_700_000_000, body: body)
                    }.rate
                })
            }

            // Revocation delay: instance B (own database client and keyring, own listener) holds
            // the key in its cache; instance A revokes; B refuses once the notification arrives.
            let revocationDelays = try await CustosRuntime.withDatabase(configuration, options: .cli()) { databaseB in
                let keyringB = TenantKeyring(pool: context.pool, database: databaseB, audit: context.audit, logger: makeLogger())
                let instanceB = APIKeyService(pool: context.pool, database: databaseB, keyring: keyringB, audit: context.audit, environment: configuration.environment, logger: makeLogger())
                let listenerB = Task { await instanceB.runRevocationListener() }
                while !instanceB.isListening { try await Task.sleep(for: .milliseconds(5)) }
                var delays = [Double]()
                for _ in 0..<revocations {
                    let fresh = try await context.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "bench")
                    _ = try await instanceB.verify(fresh.key)
                    let start = ContinuousClock.now
                    _ = try await context.apiKeys.revoke(tenant: tenant.id, keyID: fresh.keyID, actor: "bench")
                    while true {
                        do {
                            _ = try await instanceB.verify(fresh.key)
                            try await Task.sleep(for: .microseconds(200))
                        } catch APIKeyError.invalid {
                            break
                        }
                        if ContinuousClock.now - start > .seconds(10) { throw LocalError.failed("revocation not seen within 10 s") }
                    }
                    delays.append(BenchmarkLoop.microseconds(ContinuousClock.now - start) / 1000)
                }
                listenerB.cancel()
                await listenerB.value
                return delays
            }
            listener.cancel()
            await listener.value

            return Report(
                raw_hmac_75b_ops_per_s: rawSmall, apikey_verify_per_s: verify.rate, apikey_ratio_to_raw: verify.rate / rawSmall,
                apikey_latency_us: verify.latency, raw_hmac_1kib_ops_per_s: rawLarge, webhook_sign_per_s: sign.rate,
                webhook_ratio_to_raw: sign.rate / rawLarge, webhook_latency_us: sign.latency,
                revocation_delay_ms: BenchmarkLoop.percentiles(revocationDelays), revocations: revocations, workers: workers, tasks: tasks,
                seconds_per_phase: seconds, recording: recording, key_use_counter: CounterCost.measure(threads: workers)
            )
        }
        if json {
            print(try encodeJSON(report))
        } else {
            print("""
            raw HSM HMAC, \(report.raw_hmac_75b_ops_per_s.rounded()) ops/s (API-key size), \(report.raw_hmac_1kib_ops_per_s.rounded()) ops/s (1 KiB)
            API-key verify      \(report.apikey_verify_per_s.rounded()) /s  p50 \(report.apikey_latency_us.p50) µs  p99 \(report.apikey_latency_us.p99) µs  ratio \(String(format: "%.3f", report.apikey_ratio_to_raw))
            webhook sign 1 KiB  \(report.webhook_sign_per_s.rounded()) /s  p50 \(report.webhook_latency_us.p50) µs  p99 \(report.webhook_latency_us.p99) µs  ratio \(String(format: "%.3f", report.webhook_ratio_to_raw))
            revocation delay    p50 \(String(format: "%.2f", report.revocation_delay_ms.p50)) ms  p99 \(String(format: "%.2f", report.revocation_delay_ms.p99)) ms  (\(report.revocations) revocations)
            """)
            for comparison in report.recording { print(comparison.line) }
            let cost = report.key_use_counter
            print("key-use counter alone: \(cost.ns_per_record_one_thread) ns per call on 1 thread, \(cost.ns_per_record_contended) ns on \(cost.threads) threads at once")
        }
    }

    private func rawHMAC(module: PKCS11Module, slot: SlotID, key: ObjectHandle, threads: Int, length: Int) throws -> Double {
        let message = [UInt8](repeating: 0x61, count: length)
        let counts = CountBox(threads)
        let group = DispatchGroup()
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(seconds * 1e9)
        let start = DispatchTime.now().uptimeNanoseconds
        for index in 0..<threads {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let session = try? module.openSession(slot: slot) else { return }
                defer { try? session.close() }
                var operations = 0
                while DispatchTime.now().uptimeNanoseconds < deadline {
                    if (try? session.sign(.sha256HMAC, key: key, data: message)) != nil { operations += 1 }
                }
                counts.set(index, operations)
            }.start()
        }
        group.wait()
        return Double(counts.total) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }
}

private final class CountBox: @unchecked Sendable {
    // SAFETY: every access holds `lock`.
    private let lock = NSLock()
    private var counts: [Int]
    init(_ count: Int) { counts = Array(repeating: 0, count: count) }
    func set(_ index: Int, _ value: Int) { lock.withLock { counts[index] = value } }
    var total: Int { lock.withLock { counts.reduce(0, +) } }
}

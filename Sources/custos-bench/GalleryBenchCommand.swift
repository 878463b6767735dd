import ArgumentParser
import Composition
import CustosCommandLine
import CustosModel
import Foundation
import HSM
import SecureMemory
import Tokenization
import TokenizationEvaluation
import Verification

/// `custos-bench gallery`: 1:N identification over a gallery of 1,000,000 default-format (quaternary)
/// subjects (and 100,000 as the baseline, in the same run): latency of the in-memory scan that
/// `VerificationService.identify` runs, and the resident memory the gallery adds.
///
/// The gallery is bulk-loaded with generated tokens (random bytes: what a PRF output
/// looks like; the scan's cost does not depend on content), plus the enrolment tokens of a
/// few synthetic identities made through the real tokenizer (HSM PRF, fixed evaluation keys);
/// every probe is another sample of one of those identities, tokenized for real, and the
/// report counts how often it comes back first.
struct GalleryBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gallery", abstract: "1:N identification over 100k and 1M tokens of the default format: latency and resident memory (local; fixed test keys)."
    )

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Subjects in the large gallery.") var subjects = 1_000_000
    @Option(help: "Subjects in the baseline gallery.") var baseline = 100_000
    @Option(help: "Identification queries per gallery.") var queries = 200

    struct Phase: Encodable {
        let subjects: Int
        /// Tokenize the probe (HSM) and scan, as a caller of identify waits for it (without the
        /// database re-read of the candidates).
        let identify_ms: BenchmarkLoop.Latency
        /// The scan alone.
        let scan_ms: BenchmarkLoop.Latency
        /// CPU time the process spent per scan, all its threads together: what the scan costs
        /// whatever else runs on the machine (on a busy one, `scan_ms` also holds the time its
        /// threads waited for a core; on an idle one with n scan threads it is about
        /// `scan_cpu_ms` ÷ n).
        let scan_cpu_ms: BenchmarkLoop.Latency
        let top1_hits: Int
        let queries: Int
        /// VmRSS after loading minus VmRSS before: what the gallery holds resident.
        let gallery_resident_mib: Double
        let process_resident_mib: Double
        let load_seconds: Double
    }

    struct Report: Encodable {
        let baseline: Phase
        let large: Phase
        let scan_threads: Int
        let token_format: String
        let bytes_per_subject_estimate: Int
    }

    func run() async throws {
        ProcessHygiene.lockDown()
        let configuration = try options.loadConfiguration()
        let poolConfiguration = try configuration.poolConfiguration()
        let tenant = ProtectedEvaluation.tenant
        // Enrolment and probe tokens of 100 identities, through the real tokenizer.
        let (enrolled, probes) = try await CustosRuntime.withPool(poolConfiguration, options: .cli()) { pool in
            let tokenizer = BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1], format: .default), kind: .structured)
            let set = SyntheticEmbeddings(configuration: .init(identities: 100, samplesPerIdentity: 2, dimension: 512, seed: 11))
            var enrolled = [BiometricToken](), probes = [BiometricToken]()
            for index in 0..<set.embeddings.count {
                let token = try await tokenizer.tokenize(try set.embeddings.featureVector(at: index), tenant: tenant, version: 1)
                if index % 2 == 0 { enrolled.append(token) } else { probes.append(token) }
            }
            // The probe-side cost (one PRF per query) is measured on its own, so the phases
            // below do not need the HSM: the same probe tokens, timed separately.
            let vector = try set.embeddings.featureVector(at: 1)
            var tokenizeTimes = [Double]()
            for _ in 0..<max(queries, 1) {
                let start = ContinuousClock.now
                _ = try await tokenizer.tokenize(vector, tenant: tenant, version: 1)
                tokenizeTimes.append(BenchmarkLoop.microseconds(ContinuousClock.now - start) / 1000)
            }
            return (enrolled, (tokens: probes, tokenizeMilliseconds: tokenizeTimes))
        }
        let small = phase(size: baseline, enrolled: enrolled, probes: probes.tokens, tokenizeMilliseconds: probes.tokenizeMilliseconds)
        let large = phase(size: subjects, enrolled: enrolled, probes: probes.tokens, tokenizeMilliseconds: probes.tokenizeMilliseconds)
        let report = Report(
            baseline: small, large: large,
            scan_threads: min(TokenGallery.maxScanThreads, ProcessInfo.processInfo.activeProcessorCount),
            token_format: BiometricTokenFormat.default.name, bytes_per_subject_estimate: TokenGallery.bytesPerSubject
        )
        if json {
            print(try encodeJSON(report))
        } else {
            for phase in [small, large] {
                print("""
                \(phase.subjects) subjects: identify p50 \(phase.identify_ms.p50) ms  p99 \(phase.identify_ms.p99) ms \
                (scan p50 \(phase.scan_ms.p50) ms  p99 \(phase.scan_ms.p99) ms, CPU p50 \(phase.scan_cpu_ms.p50) ms); top-1 \(phase.top1_hits)/\(phase.queries); \
                gallery resident \(String(format: "%.0f", phase.gallery_resident_mib)) MiB, process \(String(format: "%.0f", phase.process_resident_mib)) MiB; \
                loaded in \(String(format: "%.1f", phase.load_seconds)) s
                """)
            }
        }
    }

    /// Loads a gallery of `size` subjects, queries it, and lets it go.
    private func phase(size: Int, enrolled: [BiometricToken], probes: [BiometricToken], tokenizeMilliseconds: [Double]) -> Phase {
        let before = Self.residentMiB()
        let loadStart = ContinuousClock.now
        var gallery = TokenGallery(capacity: size)
        gallery.reserveCapacity(size)
        var random = SplitMix(seed: UInt64(size))
        for index in 0..<(size - enrolled.count) {
            // Random 1 KiB tokens of the default format, as stored (any format's bytes are uniform).
            let bytes = (0..<(BiometricTokenFormat.default.byteCount / 8)).flatMap { _ in
                let word = random.next()
                return (0..<8).map { UInt8(truncatingIfNeeded: word >> UInt64(8 * $0)) }
            }
            gallery.enrol(Self.subject(index), BiometricToken(keyVersion: 1, format: .default, bytes: bytes)!)
        }
        // The real identities sit among the generated ones (spread through the gallery).
        for (identity, token) in enrolled.enumerated() { gallery.enrol("identity-\(identity)", token) }
        let loadSeconds = BenchmarkLoop.microseconds(ContinuousClock.now - loadStart) / 1e6
        let after = Self.residentMiB()

        var scans = [Double](), cpu = [Double](), totals = [Double](), hits = 0
        for query in 0..<queries {
            let identity = query % probes.count
            let cpuStart = Self.processCPUMilliseconds()
            let start = ContinuousClock.now
            let best = gallery.identify(probes[identity], top: 5)
            let scan = BenchmarkLoop.microseconds(ContinuousClock.now - start) / 1000
            cpu.append(Self.processCPUMilliseconds() - cpuStart)
            scans.append(scan)
            totals.append(scan + tokenizeMilliseconds[query % tokenizeMilliseconds.count])
            if best.first?.subject == "identity-\(identity)" { hits += 1 }
        }
        return Phase(
            subjects: gallery.count, identify_ms: BenchmarkLoop.percentiles(totals), scan_ms: BenchmarkLoop.percentiles(scans),
            scan_cpu_ms: BenchmarkLoop.percentiles(cpu),
            top1_hits: hits, queries: queries, gallery_resident_mib: after - before, process_resident_mib: after, load_seconds: loadSeconds
        )
    }

    /// A subject reference shaped like the service's (`v1:` and 64 hex digits), so the
    /// gallery's per-subject memory is what it is in service.
    private static func subject(_ index: Int) -> String {
        let hex = String(index, radix: 16)
        return "v1:" + String(repeating: "0", count: 64 - hex.count) + hex
    }

    /// CPU time of this process so far, every thread's (`CLOCK_PROCESS_CPUTIME_ID`), in ms.
    static func processCPUMilliseconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
        return Double(time.tv_sec) * 1e3 + Double(time.tv_nsec) / 1e6
    }

    /// VmRSS of this process in MiB (Linux: /proc/self/status).
    static func residentMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Double(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kib / 1024
    }

    /// SplitMix64: fast, deterministic filler for generated tokens (not for anything secret).
    struct SplitMix {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}

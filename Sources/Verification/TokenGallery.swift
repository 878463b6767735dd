public import CustosModel
public import Storage
import Dispatch
import Foundation
import Synchronization

/// One tenant's enrolled subjects of one key version in memory, for 1:N identification by a
/// full scan.
///
/// Compact: each subject is held as a 1,024-byte fingerprint, so a million subjects fit in about
/// 1.2 GiB (``bytesPerSubject``). For a version of a 1 KiB format (``BiometricTokenFormat/quaternary``,
/// ``BiometricTokenFormat/compact``) the fingerprint *is* the token, and its agreement is the
/// token score; for an older, wide version it is the low byte of each 32-bit value, which agrees
/// by chance at about 1 position in 256 (an impostor's score rises by ~0.004 on average). The
/// probe's format says how fingerprints compare: 2-bit values for quaternary, bytes otherwise
/// (every subject of a version has its format). Either way the service re-scores the preselected
/// candidates against their tokens in PostgreSQL before any decision
/// (``VerificationService/identify(tenant:probe:older:top:)``), which also drops subjects erased
/// meanwhile.
///
/// The scan compares 64 bytes per step (``PackedAgreement``) and, past ``parallelScanThreshold`` subjects, splits the
/// gallery into one slice per core (at most ``maxScanThreads``); see docs/benchmarks.md for its
/// latency at 100k and 1M subjects.
///
/// Bounded: at most `capacity` subjects. Past that the least recently matched or enrolled
/// subject is evicted from memory — not from the database: an evicted subject can still be
/// verified 1:1, and is back in the gallery after its next enrolment or match. Identification
/// over a tenant larger than the capacity therefore only searches the most recently active
/// subjects; DESIGN §6's Postgres LSH index is the way past that.
public struct TokenGallery: Sendable {
    public struct Candidate: Sendable, Hashable {
        public let subject: String
        /// Fingerprint agreement, 0 to 1: at least the token score, slightly above it by chance.
        public let score: Double
    }

    /// Memory per subject, measured by parts: the fingerprint (1,024 B), its key version and
    /// last use (16 B), the subject reference (`v<n>:` + 64 hex digits, ~96 B in a `String`'s
    /// heap storage) and its index entry (~140 B of dictionary at its load factor).
    public static let bytesPerSubject = 1_280

    public let capacity: Int
    /// ``fingerprintBytes`` bytes per subject, contiguous, in subject order.
    private var fingerprints: [UInt8] = []
    private var versions: [Int] = []
    private var subjects: [String] = []
    private var lastUsed: [UInt64] = []
    private var positions: [String: Int] = [:]
    private var tick: UInt64 = 0

    /// Below this many subjects one thread scans (a thread hop costs more than it saves).
    public static let parallelScanThreshold = 32_768
    /// Threads one scan may use (bounded by the cores there are).
    public static let maxScanThreads = 8

    /// The bytes of one fingerprint: a 1 KiB token, or one byte of each value of a wide one.
    public static let fingerprintBytes = 1_024

    public init(capacity: Int) {
        precondition(capacity > 0, "a gallery holds at least one token")
        self.capacity = capacity
    }

    public var count: Int { subjects.count }

    /// Makes room for `subjects` subjects at once (at most the capacity), so loading a large
    /// gallery allocates its storage once instead of doubling it (and briefly holding both).
    public mutating func reserveCapacity(_ subjects: Int) {
        let wanted = min(subjects, capacity)
        fingerprints.reserveCapacity(wanted * Self.fingerprintBytes)
        versions.reserveCapacity(wanted)
        self.subjects.reserveCapacity(wanted)
        lastUsed.reserveCapacity(wanted)
        positions.reserveCapacity(wanted)
    }

    /// The fingerprint of a stored token: a 1 KiB token itself, or the low byte of each
    /// little-endian 32-bit value of a wide one. The format is not needed to make it (only to
    /// compare it), so templates go in as they are read.
    static func fingerprint(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.count != fingerprintBytes else { return bytes }
        let step = bytes.count / fingerprintBytes
        return (0..<fingerprintBytes).map { bytes[$0 * step] }
    }

    /// Adds or replaces the subject's token; may evict the least recently used subject.
    /// - Returns: the subject evicted to make room, if any.
    @discardableResult
    public mutating func enrol(_ subject: String, _ token: BiometricToken) -> String? {
        enrol(subject, keyVersion: token.keyVersion, bytes: token.bytes)
    }

    /// Adds or replaces the subject's template as stored (its version's format is the probe's
    /// when it is compared; the service re-reads candidates in that format before deciding).
    @discardableResult
    public mutating func enrol(_ subject: String, _ template: StoredTemplate) -> String? {
        enrol(subject, keyVersion: template.keyVersion, bytes: template.bytes)
    }

    private mutating func enrol(_ subject: String, keyVersion: Int, bytes: [UInt8]) -> String? {
        tick += 1
        let fingerprint = Self.fingerprint(bytes)
        let width = Self.fingerprintBytes
        if let position = positions[subject] {
            fingerprints.replaceSubrange(position * width..<(position + 1) * width, with: fingerprint)
            versions[position] = keyVersion
            lastUsed[position] = tick
            return nil
        }
        var evicted: String?
        if subjects.count >= capacity, let oldest = lastUsed.indices.min(by: { lastUsed[$0] < lastUsed[$1] }) {
            evicted = subjects[oldest]
            remove(at: oldest)
        }
        positions[subject] = subjects.count
        fingerprints.append(contentsOf: fingerprint)
        versions.append(keyVersion)
        subjects.append(subject)
        lastUsed.append(tick)
        return evicted
    }

    /// Removes a subject (erasure, retention).
    public mutating func remove(_ subject: String) {
        guard let position = positions[subject] else { return }
        remove(at: position)
    }

    /// The `k` best candidates for `probe` by fingerprint (same key version only), best first;
    /// equal agreement in gallery order.
    public mutating func identify(_ probe: BiometricToken, top k: Int) -> [Candidate] {
        let threads = subjects.count < Self.parallelScanThreshold ? 1 : max(1, min(Self.maxScanThreads, ProcessInfo.processInfo.activeProcessorCount))
        return identify(probe, top: k, threads: threads)
    }

    /// ``identify(_:top:)`` with `threads` slices, whatever the gallery's size (tests).
    mutating func identify(_ probe: BiometricToken, top k: Int, threads: Int) -> [Candidate] {
        let query = Self.fingerprint(probe.bytes)
        let count = subjects.count
        let comparison = Comparison(probe.format)
        let best = query.withUnsafeBytes { query in
            fingerprints.withUnsafeBytes { all in
                versions.withUnsafeBufferPointer { versions in
                    Self.scan(
                        ScanInput(query: query, all: all, versions: versions, version: probe.keyVersion, comparison: comparison),
                        count: count, top: k, threads: threads
                    )
                }
            }
        }
        tick += 1
        for entry in best { lastUsed[entry.position] = tick }
        return best.map { Candidate(subject: subjects[$0.position], score: Double($0.matches) / Double(comparison.positions)) }
    }

    /// How two fingerprints of one format compare: by 2-bit values (quaternary: the token's own
    /// 4,096 positions) or by bytes (compact: the token's 1,024; wide: one byte of each value).
    enum Comparison: Sendable {
        case pairs, bytes

        init(_ format: BiometricTokenFormat) {
            self = format == .quaternary ? .pairs : .bytes
        }

        /// The positions one fingerprint holds.
        var positions: Int { self == .pairs ? 4 * TokenGallery.fingerprintBytes : TokenGallery.fingerprintBytes }

        @inline(__always)
        func matches(_ query: UnsafeRawPointer, _ fingerprint: UnsafeRawPointer) -> Int {
            switch self {
            case .pairs: PackedAgreement.equalPairs(query, fingerprint, byteCount: TokenGallery.fingerprintBytes)
            case .bytes: PackedAgreement.equalBytes(query, fingerprint, byteCount: TokenGallery.fingerprintBytes)
            }
        }
    }

    /// What a scan reads: the probe's fingerprint, every fingerprint, their key versions, and
    /// how the probe's format compares them.
    // SAFETY: the buffers borrow the gallery's arrays for the duration of `identify`, which
    // waits for every slice (`concurrentPerform` returns when all are done) before they end;
    // slices only read them.
    struct ScanInput: @unchecked Sendable {
        let query: UnsafeRawBufferPointer
        let all: UnsafeRawBufferPointer
        let versions: UnsafeBufferPointer<Int>
        let version: Int
        let comparison: Comparison
    }

    /// The best `k` of `count` subjects: one slice per thread, each keeping its own best `k`,
    /// merged by agreement, then gallery order.
    static func scan(_ input: ScanInput, count: Int, top k: Int, threads: Int) -> [(position: Int, matches: Int)] {
        guard threads > 1 else { return scanSlice(input, 0..<count, top: k) }
        let slice = (count + threads - 1) / threads
        let results = SliceResults()
        DispatchQueue.concurrentPerform(iterations: threads) { index in
            results.add(scanSlice(input, (index * slice)..<min(count, (index + 1) * slice), top: k))
        }
        let merged = results.all.sorted { ($0.matches, $1.position) > ($1.matches, $0.position) }
        return Array(merged.prefix(k))
    }

    /// The best candidates of every slice, collected as the slices finish.
    final class SliceResults: Sendable {
        private let found = Mutex([(position: Int, matches: Int)]())
        func add(_ slice: [(position: Int, matches: Int)]) { found.withLock { $0 += slice } }
        var all: [(position: Int, matches: Int)] { found.withLock { $0 } }
    }

    private static func scanSlice(_ input: ScanInput, _ range: Range<Int>, top k: Int) -> [(position: Int, matches: Int)] {
        var best = [(position: Int, matches: Int)]()
        best.reserveCapacity(k + 1)
        // SAFETY: `query` holds one fingerprint and `all` holds `count` of them (the gallery
        // keeps `fingerprints.count == subjects.count * length`); `range` lies within `count`.
        let query = input.query.baseAddress!
        let all = input.all.baseAddress!
        let comparison = input.comparison
        for position in range where input.versions[position] == input.version {
            let matches = comparison.matches(query, all + position * fingerprintBytes)
            if best.count < k || matches > best[best.count - 1].matches {
                // Insert in order (stable: an equal count goes after those already kept).
                let at = best.firstIndex { $0.matches < matches } ?? best.count
                best.insert((position, matches), at: at)
                if best.count > k { best.removeLast() }
            }
        }
        return best
    }

    /// Swap-remove: O(1), order does not matter for a full scan.
    private mutating func remove(at position: Int) {
        let last = subjects.count - 1
        let width = Self.fingerprintBytes
        positions[subjects[position]] = nil
        if position != last {
            for index in 0..<width { fingerprints[position * width + index] = fingerprints[last * width + index] }
            versions[position] = versions[last]
            subjects[position] = subjects[last]
            lastUsed[position] = lastUsed[last]
            positions[subjects[position]] = position
        }
        fingerprints.removeLast(width)
        versions.removeLast()
        subjects.removeLast()
        lastUsed.removeLast()
    }
}

public import CustosModel
import Dispatch
import Foundation
import Synchronization

/// One tenant's enrolled subjects of one key version in memory, for 1:N identification by a
/// full scan.
///
/// Compact: each subject is held as a 1,024-byte fingerprint — one byte per position — so a
/// million subjects fit in about 1.2 GiB (``bytesPerSubject``). For a version of the compact
/// format (``BiometricTokenFormat/compact``) the fingerprint *is* the token, and its agreement
/// is the token score; for an older, wide version it is the low byte of each 32-bit value, which
/// agrees by chance at about 1 position in 256 (an impostor's score rises by ~0.004 on average).
/// Either way the service re-scores the preselected candidates against their tokens in
/// PostgreSQL before any decision (``VerificationService/identify(tenant:probe:older:top:)``),
/// which also drops subjects erased meanwhile.
///
/// The scan compares 64 bytes per step and, past ``parallelScanThreshold`` subjects, splits the
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
    /// ``BiometricToken/length`` bytes per subject, contiguous, in subject order.
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

    public init(capacity: Int) {
        precondition(capacity > 0, "a gallery holds at least one token")
        self.capacity = capacity
    }

    public var count: Int { subjects.count }

    /// Makes room for `subjects` subjects at once (at most the capacity), so loading a large
    /// gallery allocates its storage once instead of doubling it (and briefly holding both).
    public mutating func reserveCapacity(_ subjects: Int) {
        let wanted = min(subjects, capacity)
        fingerprints.reserveCapacity(wanted * BiometricToken.length)
        versions.reserveCapacity(wanted)
        self.subjects.reserveCapacity(wanted)
        lastUsed.reserveCapacity(wanted)
        positions.reserveCapacity(wanted)
    }

    /// The fingerprint of a token: the low byte of each value (a compact token's values are
    /// bytes, so its fingerprint is the token itself).
    static func fingerprint(_ token: BiometricToken) -> [UInt8] {
        token.values.map { UInt8(truncatingIfNeeded: $0) }
    }

    /// Adds or replaces the subject's token; may evict the least recently used subject.
    /// - Returns: the subject evicted to make room, if any.
    @discardableResult
    public mutating func enrol(_ subject: String, _ token: BiometricToken) -> String? {
        tick += 1
        let fingerprint = Self.fingerprint(token)
        let width = BiometricToken.length
        if let position = positions[subject] {
            fingerprints.replaceSubrange(position * width..<(position + 1) * width, with: fingerprint)
            versions[position] = token.keyVersion
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
        versions.append(token.keyVersion)
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
        let query = Self.fingerprint(probe)
        let count = subjects.count
        let best = query.withUnsafeBytes { query in
            fingerprints.withUnsafeBytes { all in
                versions.withUnsafeBufferPointer { versions in
                    Self.scan(ScanInput(query: query, all: all, versions: versions, version: probe.keyVersion), count: count, top: k, threads: threads)
                }
            }
        }
        tick += 1
        for entry in best { lastUsed[entry.position] = tick }
        return best.map { Candidate(subject: subjects[$0.position], score: Double($0.matches) / Double(BiometricToken.length)) }
    }

    /// What a scan reads: the probe's fingerprint, every fingerprint, and their key versions.
    // SAFETY: the buffers borrow the gallery's arrays for the duration of `identify`, which
    // waits for every slice (`concurrentPerform` returns when all are done) before they end;
    // slices only read them.
    struct ScanInput: @unchecked Sendable {
        let query: UnsafeRawBufferPointer
        let all: UnsafeRawBufferPointer
        let versions: UnsafeBufferPointer<Int>
        let version: Int
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
        for position in range where input.versions[position] == input.version {
            let matches = countEqual(query, all + position * BiometricToken.length)
            if best.count < k || matches > best[best.count - 1].matches {
                // Insert in order (stable: an equal count goes after those already kept).
                let at = best.firstIndex { $0.matches < matches } ?? best.count
                best.insert((position, matches), at: at)
                if best.count > k { best.removeLast() }
            }
        }
        return best
    }

    /// Equal bytes between two fingerprints, 64 per step, in SWAR form on 32-bit lanes: a byte
    /// of `a ^ b` is zero where the fingerprints agree, and `~(((x & 0x7F…) + 0x7F…) | x)` sets
    /// the top bit of exactly the zero bytes. Each byte of a lane counts its own agreements (at
    /// most 16 over 1,024 bytes: no carry into the next byte), summed once at the end.
    ///
    /// Why not `SIMD64<UInt8>` and `.==`: measured in a release build here, the mask compare
    /// and its conversion take ~40 µs per fingerprint (generic code, not vector instructions);
    /// this form takes ~0.15 µs.
    @inline(__always)
    static func countEqual(_ query: UnsafeRawPointer, _ fingerprint: UnsafeRawPointer) -> Int {
        let low7 = SIMD16<UInt32>(repeating: 0x7F7F_7F7F)
        let ones = SIMD16<UInt32>(repeating: 0x0101_0101)
        var lanes = SIMD16<UInt32>()
        var offset = 0
        while offset < BiometricToken.length {
            let x = query.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
                ^ fingerprint.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
            let nonzero = ((x & low7) &+ low7) | x
            lanes &+= (~nonzero &>> 7) & ones
            offset += 64
        }
        // The four byte counts of each lane, summed into its top byte (≤ 64: no overflow).
        return Int(((lanes &* ones) &>> 24).wrappedSum())
    }

    /// Swap-remove: O(1), order does not matter for a full scan.
    private mutating func remove(at position: Int) {
        let last = subjects.count - 1
        let width = BiometricToken.length
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

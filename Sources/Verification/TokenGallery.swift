public import CustosModel

/// One tenant's enrolled subjects in memory, for 1:N identification by a full scan.
///
/// Compact: each subject is held as a 1,024-byte fingerprint — the low byte of each of its
/// token's 32-bit values — not the 4 KiB token, so a million subjects fit in about 1.2 GiB
/// (``bytesPerSubject``). Fingerprints of unrelated tokens agree by chance at about 1 position
/// in 256 (an impostor's score rises by ~0.004 on average), so the scan only preselects
/// candidates: the service re-scores them against their full tokens in PostgreSQL before any
/// decision (``VerificationService/identify(tenant:probe:top:)``).
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

    public init(capacity: Int) {
        precondition(capacity > 0, "a gallery holds at least one token")
        self.capacity = capacity
    }

    public var count: Int { subjects.count }

    /// The fingerprint of a token: the low byte of each value.
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

    /// The `k` best candidates for `probe` by fingerprint (same key version only), best first.
    public mutating func identify(_ probe: BiometricToken, top k: Int) -> [Candidate] {
        let query = Self.fingerprint(probe)
        var best = [(position: Int, matches: Int)]()
        query.withUnsafeBytes { query in
            fingerprints.withUnsafeBytes { all in
                for position in subjects.indices where versions[position] == probe.keyVersion {
                    let matches = Self.countEqual(query, all, at: position * BiometricToken.length)
                    if best.count < k || matches > best[best.count - 1].matches {
                        best.append((position, matches))
                        best.sort { $0.matches > $1.matches }
                        if best.count > k { best.removeLast() }
                    }
                }
            }
        }
        tick += 1
        for entry in best { lastUsed[entry.position] = tick }
        return best.map { Candidate(subject: subjects[$0.position], score: Double($0.matches) / Double(BiometricToken.length)) }
    }

    /// Equal bytes between the query and the fingerprint at `offset`, 64 at a time.
    @inline(__always)
    private static func countEqual(_ query: UnsafeRawBufferPointer, _ all: UnsafeRawBufferPointer, at offset: Int) -> Int {
        // SAFETY: `query` holds `BiometricToken.length` bytes (a fingerprint) and `all` holds
        // whole fingerprints, so `offset + length` is within it; loads are unaligned.
        let zero = SIMD64<UInt8>(repeating: 0)
        var total = 0
        var step = 0
        while step < BiometricToken.length {
            let a = query.loadUnaligned(fromByteOffset: step, as: SIMD64<UInt8>.self)
            let b = all.loadUnaligned(fromByteOffset: offset + step, as: SIMD64<UInt8>.self)
            // Per-lane counts stay ≤ 1 per step: sum each step (at most 64, no overflow).
            total += Int(zero.replacing(with: 1, where: a .== b).wrappedSum())
            step += 64
        }
        return total
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

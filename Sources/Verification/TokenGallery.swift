public import CustosModel

/// One tenant's enrolled tokens in memory, for 1:N identification by a full scan (SIMD compare
/// of 1,024 values per token).
///
/// Bounded: at most `capacity` tokens (100k × 4 KiB = 400 MiB). Past that the least recently
/// matched or enrolled subject is evicted from memory — not from the database: an evicted
/// subject can still be verified 1:1, and is back in the gallery after its next enrolment or
/// match. Identification over a tenant larger than the capacity therefore only searches the
/// most recently active subjects; DESIGN §6's Postgres LSH index is the way past that.
public struct TokenGallery: Sendable {
    public struct Candidate: Sendable, Hashable {
        public let subject: String
        public let score: Double
    }

    public let capacity: Int
    private var tokens: [BiometricToken] = []
    private var subjects: [String] = []
    private var lastUsed: [UInt64] = []
    private var positions: [String: Int] = [:]
    private var tick: UInt64 = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "a gallery holds at least one token")
        self.capacity = capacity
    }

    public var count: Int { tokens.count }

    /// Adds or replaces the subject's token; may evict the least recently used subject.
    /// - Returns: the subject evicted to make room, if any.
    @discardableResult
    public mutating func enrol(_ subject: String, _ token: BiometricToken) -> String? {
        tick += 1
        if let position = positions[subject] {
            tokens[position] = token
            lastUsed[position] = tick
            return nil
        }
        var evicted: String?
        if tokens.count >= capacity, let oldest = lastUsed.indices.min(by: { lastUsed[$0] < lastUsed[$1] }) {
            evicted = subjects[oldest]
            remove(at: oldest)
        }
        positions[subject] = tokens.count
        tokens.append(token)
        subjects.append(subject)
        lastUsed.append(tick)
        return evicted
    }

    /// Removes a subject (erasure, retention).
    public mutating func remove(_ subject: String) {
        guard let position = positions[subject] else { return }
        remove(at: position)
    }

    /// The `k` best candidates for `probe` (same key version only), best first.
    public mutating func identify(_ probe: BiometricToken, top k: Int) -> [Candidate] {
        var best = [(position: Int, matches: Int)]()
        for (position, token) in tokens.enumerated() where token.keyVersion == probe.keyVersion {
            let matches = probe.matchingPositions(with: token)
            if best.count < k || matches > best[best.count - 1].matches {
                best.append((position, matches))
                best.sort { $0.matches > $1.matches }
                if best.count > k { best.removeLast() }
            }
        }
        tick += 1
        for entry in best { lastUsed[entry.position] = tick }
        return best.map { Candidate(subject: subjects[$0.position], score: Double($0.matches) / Double(BiometricToken.length)) }
    }

    /// Swap-remove: O(1), order does not matter for a full scan.
    private mutating func remove(at position: Int) {
        let last = tokens.count - 1
        positions[subjects[position]] = nil
        if position != last {
            tokens[position] = tokens[last]
            subjects[position] = subjects[last]
            lastUsed[position] = lastUsed[last]
            positions[subjects[position]] = position
        }
        tokens.removeLast()
        subjects.removeLast()
        lastUsed.removeLast()
    }
}

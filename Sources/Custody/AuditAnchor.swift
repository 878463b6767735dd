import SecureMemory

/// One anchored head of the audit chain, kept outside PostgreSQL (in the HSM and in a file):
/// entry `seq` has hash `hash` and links to a predecessor with hash `previousHash`; the root MAC
/// key authenticates all three.
///
/// An anchor is written under the append lock, *before* the appending transaction commits (the
/// lock is a transaction lock, and a caller's own transaction may still roll back after the
/// append). So an honest log stands in one of two relations to its newest anchor: it holds
/// entry `seq` with `hash` (committed), or it ends at `seq - 1` with `previousHash` (that last
/// transaction rolled back). Anything shorter means entries were deleted; anything else means
/// the chain was rewritten.
struct AuditAnchor: Sendable, Equatable {
    let seq: Int64
    let hash: [UInt8]
    /// `nil` only for anchor lines written before version 2 (hash and sequence only).
    let previousHash: [UInt8]?
    let mac: [UInt8]

    static let domain = "custos/audit/v2/anchor"
    static let legacyDomain = "custos/audit/v1/anchor"
    static let format: UInt8 = 2
    static let hashLength = 32

    /// What the root MAC key signs.
    static func message(seq: Int64, hash: [UInt8], previousHash: [UInt8]?) -> [UInt8] {
        guard let previousHash else { return AuditLog.anchorMessage(seq: seq, hash: hash) }
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(seq)
        encoding.append(hash)
        encoding.append(previousHash)
        return encoding.bytes
    }

    var message: [UInt8] { Self.message(seq: seq, hash: hash, previousHash: previousHash) }

    // MARK: HSM value: format byte, sequence (8 bytes, big-endian), hash, previous hash, MAC

    var bytes: [UInt8] {
        var bytes = [Self.format]
        withUnsafeBytes(of: UInt64(bitPattern: seq).bigEndian) { bytes.append(contentsOf: $0) }
        bytes += hash + (previousHash ?? []) + mac
        return bytes
    }

    init(seq: Int64, hash: [UInt8], previousHash: [UInt8]?, mac: [UInt8]) {
        self.seq = seq
        self.hash = hash
        self.previousHash = previousHash
        self.mac = mac
    }

    init?(bytes: [UInt8]) {
        guard bytes.count == 1 + 8 + 3 * Self.hashLength, bytes[0] == Self.format else { return nil }
        var seq: UInt64 = 0
        for byte in bytes[1 ..< 9] { seq = seq << 8 | UInt64(byte) }
        self.init(
            seq: Int64(bitPattern: seq), hash: Array(bytes[9 ..< 41]), previousHash: Array(bytes[41 ..< 73]),
            mac: Array(bytes[73 ..< 105])
        )
    }

    // MARK: File line: "v2 <seq> <hash> <previous hash> <mac>" (legacy: "<seq> <hash> <mac>")

    var line: String {
        "v2 \(seq) \(Hex.encode(hash)) \(Hex.encode(previousHash ?? [])) \(Hex.encode(mac))\n"
    }

    init?(line: Substring) {
        let fields = line.split(separator: " ")
        if fields.count == 5, fields[0] == "v2", let seq = Int64(fields[1]), let hash = Hex.decode(fields[2]),
           let previous = Hex.decode(fields[3]), let mac = Hex.decode(fields[4]) {
            self.init(seq: seq, hash: hash, previousHash: previous, mac: mac)
        } else if fields.count == 3, let seq = Int64(fields[0]), let hash = Hex.decode(fields[1]), let mac = Hex.decode(fields[2]) {
            self.init(seq: seq, hash: hash, previousHash: nil, mac: mac)
        } else {
            return nil
        }
    }

    // MARK: Against the log

    /// Where the log stands relative to this anchor.
    enum Standing: Equatable {
        /// The log holds the anchored entry (or, with anchors not shared by every appender, a
        /// later entry took its place after a rollback and the predecessor matches).
        case confirmed
        /// The log ends just before the anchored entry, at its predecessor: the anchoring
        /// transaction rolled back — or the single newest entry was deleted. The two cannot be
        /// told apart from here; ``AuditLog/Verification/unconfirmedSeq`` reports it.
        case newestAbsent
        /// Entries from `firstMissing` on were deleted.
        case truncated(firstMissing: Int64)
        /// The entry at `seq` is not the one anchored: the chain was rewritten.
        case diverged(seq: Int64)
    }

    /// - Parameters:
    ///   - head: the log's newest entry (sequence number and hash), `nil` if empty.
    ///   - hashAt: the stored hash of one entry (only read when the head does not settle it).
    func standing(head: (seq: Int64, hash: [UInt8])?, hashAt: (Int64) async throws -> [UInt8]?) async throws -> Standing {
        let headSeq = head?.seq ?? 0
        let zero = [UInt8](repeating: 0, count: Self.hashLength)
        func predecessorMatches(_ stored: [UInt8]?) -> Bool {
            guard let previousHash else { return false }
            return (stored ?? (seq == 1 ? zero : nil)) == previousHash
        }
        // The head's number comes from the database, anything up to `Int64.max`; the anchor's is
        // MAC'd and at least 1 (helper-71: `headSeq + 1` trapped on a planted `Int64.max`).
        guard seq >= 1 else { return .diverged(seq: 1) }
        if headSeq < seq - 1 { return .truncated(firstMissing: headSeq + 1) }
        if headSeq == seq - 1 {
            return predecessorMatches(head?.hash) ? .newestAbsent : .diverged(seq: Swift.max(headSeq, 1))
        }
        let stored = seq == headSeq ? head?.hash : try await hashAt(seq)
        if stored == hash { return .confirmed }
        let before = seq == 1 ? nil : try await hashAt(seq - 1)
        return predecessorMatches(before) ? .confirmed : .diverged(seq: seq)
    }
}

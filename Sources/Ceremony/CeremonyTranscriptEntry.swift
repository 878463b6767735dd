import Crypto

/// One line of a ceremony transcript (JSON lines). Every field but ``entryHash`` and ``mac`` is
/// covered by the entry hash, which also covers the previous entry's hash; the MAC (HMAC-SHA256
/// in the HSM under the root MAC key) covers the entry hash.
public struct CeremonyTranscriptEntry: Codable, Sendable, Hashable {
    /// A root key as the step saw it on the token.
    public struct Key: Codable, Sendable, Hashable {
        public let label: String
        /// `CKA_ID`, hex.
        public let id: String
        /// `CKA_CHECK_VALUE` as the token reports it, hex.
        public let checkValue: String

        public init(label: String, id: String, checkValue: String) {
            self.label = label
            self.id = id
            self.checkValue = checkValue
        }
    }

    /// A share written or used by the step: its index, file name and own check value.
    public struct Share: Codable, Sendable, Hashable {
        public let index: Int
        public let file: String
        public let checkValue: String

        public init(index: Int, file: String, checkValue: String) {
            self.index = index
            self.file = file
            self.checkValue = checkValue
        }
    }

    public let seq: Int
    public let time: String
    public let step: String
    public let ceremonyID: String?
    public let operatorName: String
    public let witnesses: [String]
    public let tokenLabel: String
    public let tokenSerial: String
    public let keys: [Key]
    public let threshold: Int?
    public let shareCount: Int?
    public let shares: [Share]
    /// Non-secret facts of the step (counts, outcome), sorted by key when hashed.
    public let details: [String: String]
    public let toolVersion: String
    public let configHash: String
    public let previousHash: String
    public let entryHash: String
    /// Label of the MAC key, or `nil` before the root MAC key exists (`init-token`): such an
    /// entry is authenticated by the next MAC'd entry, whose hash covers it.
    public let macKey: String?
    public let mac: String?

    enum CodingKeys: String, CodingKey {
        case seq, time, step, ceremonyID, operatorName = "operator", witnesses, tokenLabel, tokenSerial, keys, threshold
        case shareCount, shares, details, toolVersion, configHash, previousHash, entryHash, macKey, mac
    }

    static let entryDomain = "custos/ceremony/v1/entry"
    /// The MAC's domain prefix, with its terminating NUL.
    static let macDomain = Array("custos/ceremony/v1".utf8) + [0]

    /// SHA-256 of every field but ``entryHash`` and ``mac``, length-prefixed in a fixed order.
    func computedHash() -> [UInt8] {
        var encoding = LengthPrefixed(domain: Self.entryDomain)
        encoding.append(String(seq))
        encoding.append(time)
        encoding.append(step)
        encoding.append(optional: ceremonyID)
        encoding.append(operatorName)
        encoding.append(list: witnesses)
        encoding.append(tokenLabel)
        encoding.append(tokenSerial)
        encoding.append(list: keys.flatMap { [$0.label, $0.id, $0.checkValue] })
        encoding.append(optional: threshold.map(String.init))
        encoding.append(optional: shareCount.map(String.init))
        encoding.append(list: shares.flatMap { [String($0.index), $0.file, $0.checkValue] })
        encoding.append(list: details.keys.sorted().flatMap { [$0, details[$0]!] })
        encoding.append(toolVersion)
        encoding.append(configHash)
        encoding.append(previousHash)
        encoding.append(optional: macKey)
        return Array(SHA256.hash(data: encoding.bytes))
    }

    /// The bytes the HSM MACs: the domain prefix, then the entry hash.
    static func macMessage(entryHash: [UInt8]) -> [UInt8] { macDomain + entryHash }
}

/// Length-prefixed concatenation: different field lists never encode to the same bytes.
struct LengthPrefixed {
    private(set) var bytes: [UInt8] = []

    init(domain: String) { append(domain) }

    mutating func append(_ field: String) {
        let utf8 = Array(field.utf8)
        var length = UInt32(utf8.count).bigEndian
        withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: utf8)
    }

    mutating func append(optional field: String?) {
        if let field {
            bytes.append(1)
            append(field)
        } else {
            bytes.append(0)
        }
    }

    mutating func append(list: [String]) {
        append(String(list.count))
        for item in list { append(item) }
    }
}

import SecureMemory

/// A tenant: a company using Custos. A UUID, lower-case text on the wire and in SQL.
public struct TenantID: Hashable, Sendable, Codable, CustomStringConvertible, LosslessStringConvertible {
    public let rawValue: String

    /// Accepts a canonical UUID (36 characters, hex and dashes), case-insensitively.
    public init?(_ description: String) {
        let lower = description.lowercased()
        let shape = Array(lower.utf8)
        guard shape.count == 36 else { return nil }
        for (index, character) in shape.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard character == UInt8(ascii: "-") else { return nil }
            } else {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(character) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(character) else { return nil }
            }
        }
        rawValue = lower
    }

    /// Parses a tenant argument or request field: the one entry point callers that must refuse
    /// bad input use, so the CLI and the RPC refuse it alike.
    /// - Throws: ``TenantIDError/notATenantID`` when `text` is not a canonical UUID.
    public static func parse(_ text: String) throws(TenantIDError) -> TenantID {
        guard let id = TenantID(text) else { throw .notATenantID }
        return id
    }

    /// A new random (version 4) tenant id.
    public static func random() -> TenantID {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0 ... 255) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let hex = Hex.encode(bytes)
        let parts = [hex.prefix(8), hex.dropFirst(8).prefix(4), hex.dropFirst(12).prefix(4), hex.dropFirst(16).prefix(4), hex.dropFirst(20)]
        return TenantID(parts.joined(separator: "-"))!
    }

    public var description: String { rawValue }
}

extension TenantID {
    /// Encoded as the bare UUID string.
    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let id = TenantID(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a tenant id"))
        }
        self = id
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// A pseudonymous subject: an HMAC of the tenant's external id under the tenant's `pii` key
/// (made by custody), never a name or an email. `piiVersion` says which key made it, so a
/// `pii` version is not destroyed while references made by it are still stored.
public struct SubjectReference: Hashable, Sendable, Codable, CustomStringConvertible {
    /// `v<version>:<64 hex digits>`.
    public let value: String
    public let piiVersion: Int

    public init(value: String, piiVersion: Int) {
        self.value = value
        self.piiVersion = piiVersion
    }

    /// Parses `v<version>:<hex>`, the form ``value`` has and callers see.
    public init?(_ value: String) {
        guard value.hasPrefix("v"), let colon = value.firstIndex(of: ":"),
              let version = Int(value[value.index(after: value.startIndex)..<colon]), version > 0 else { return nil }
        let digest = value[value.index(after: colon)...]
        guard digest.utf8.count == 64, digest.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        self.init(value: value, piiVersion: version)
    }

    public var description: String { value }
}

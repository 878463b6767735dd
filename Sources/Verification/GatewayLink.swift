import Crypto
import Foundation

/// A candidate's single-use gateway link token: `cgl_` and 32 random bytes in base64url. It is
/// a bearer secret (whoever holds it can consent for the candidate), so only its SHA-256 is
/// stored and its `description` is redacted.
public struct GatewayLink: Sendable, Hashable, CustomStringConvertible {
    public let value: String

    static let prefix = "cgl_"

    static func random() -> GatewayLink {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let encoded = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return GatewayLink(uncheckedValue: prefix + encoded)
    }

    private init(uncheckedValue: String) { value = uncheckedValue }

    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` unless `value` has the shape
    ///   of a link this service makes.
    public init(_ value: String) throws {
        let body = value.utf8.dropFirst(Self.prefix.utf8.count)
        guard value.hasPrefix(Self.prefix), body.count == 43,
              body.allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2D || $0 == 0x5F })
        else {
            throw VerificationError.invalidArgument(field: "gateway_link", reason: "not a Custos gateway link (cgl_ and 43 base64url characters)")
        }
        self.value = value
    }

    /// What the database stores: the link is 256 random bits, so an unkeyed hash is enough.
    var hash: [UInt8] { Array(SHA256.hash(data: Array(value.utf8))) }

    public var description: String { "cgl_<redacted>" }
}

import Crypto
import SecureMemory

/// What names a custodians' escrow key outside the token and the database: `sha256:` and the
/// lower-case hex of SHA-256 over the X25519 public key's 32 raw bytes. config.json lists the
/// trusted ones (`webhookEscrowKeys`), because a row's HSM MAC proves only that someone with
/// the user PIN wrote it (docs/threat-model.md, round 3).
public struct EscrowKeyFingerprint: Sendable, Hashable, CustomStringConvertible {
    public static let prefix = "sha256:"

    /// The 32-byte SHA-256 of the public key.
    public let digest: [UInt8]

    public init(publicKey: [UInt8]) {
        digest = Array(SHA256.hash(data: publicKey))
    }

    /// `nil` unless `text` is `sha256:` followed by 64 hex digits (either case).
    public init?(parsing text: String) {
        guard text.hasPrefix(Self.prefix), let digest = Hex.decode(text.dropFirst(Self.prefix.count)), digest.count == 32 else { return nil }
        self.digest = digest
    }

    public var description: String { Self.prefix + Hex.encode(digest) }
}

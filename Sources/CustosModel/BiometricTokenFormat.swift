/// How much of each PRF output a biometric token keeps (DESIGN §6 step 4). The format belongs to
/// the `bio` key version that makes the tokens: it is recorded in that version's `key_versions`
/// rows (under their row MAC) when the version is created and never changes, so every template
/// of a version has one format, and a new format reaches existing templates only through a
/// biometric rotation's overlap (a GREEN verify re-enrols the subject under the new version).
public enum BiometricTokenFormat: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// 32 bits per position, 4 KiB per token: every `bio` version made before the compact format
    /// existed (their rows record no format).
    case wide = 1
    /// 8 bits per position, 1 KiB per token: new tenants and new biometric rotations. Two
    /// different symbols collide at a position with probability 2⁻⁸ instead of 2⁻³², which
    /// raises an impostor's expected score by (1 − 1/16) / 256 ≈ 0.0037 (docs/tokenization.md).
    case compact = 2

    /// What new `bio` versions get.
    public static let `default` = BiometricTokenFormat.compact

    /// m = 1,024 positions of q = 16 symbols, and 32 or 8 bits kept per position.
    public var shape: BiometricTokenShape {
        BiometricTokenShape(positions: BiometricToken.length, symbolsPerPosition: 16, bitsPerValue: bitsPerValue)!
    }

    /// The format's name in reports and on the command line.
    public var name: String {
        switch self {
        case .wide: "wide"
        case .compact: "compact"
        }
    }

    /// Bits of each PRF output block kept per position.
    public var bitsPerValue: Int {
        switch self {
        case .wide: 32
        case .compact: 8
        }
    }

    /// Stored bytes per position.
    public var bytesPerValue: Int { bitsPerValue / 8 }

    /// Stored bytes per token.
    public var byteCount: Int { BiometricToken.length * bytesPerValue }

    /// The largest value a position can hold.
    public var maxValue: UInt32 { bitsPerValue == 32 ? .max : (1 << UInt32(bitsPerValue)) - 1 }

    /// The format whose tokens are `byteCount` bytes long, if any.
    public init?(byteCount: Int) {
        guard let format = Self.allCases.first(where: { $0.byteCount == byteCount }) else { return nil }
        self = format
    }

    public var description: String {
        switch self {
        case .wide: "wide (32 bits per position)"
        case .compact: "compact (8 bits per position)"
        }
    }
}

/// How a biometric token is made and stored (DESIGN §6 steps 2–4): its shape (positions, symbols
/// per position, bits kept of each PRF output) and so its stored length. The format belongs to
/// the `bio` key version that makes the tokens: it is recorded in that version's `key_versions`
/// rows (under their row MAC) when the version is created and never changes, so every template
/// of a version has one format, and a new format reaches existing templates only through a
/// biometric rotation's overlap (a GREEN verify re-enrols the subject under the new version).
///
/// A template's length does not name its format (compact and quaternary tokens are both 1,024
/// bytes): it is read in its version's format, and refused when the length is not that format's.
public enum BiometricTokenFormat: Int, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// 1,024 positions of q = 16, 32 bits per position, 4 KiB per token: every `bio` version made
    /// before the compact format existed (their rows record no format).
    case wide = 1
    /// 1,024 positions of q = 16, 8 bits per position, 1 KiB per token: versions made between
    /// the compact and the quaternary format. Two different symbols collide at a position with
    /// probability 2⁻⁸ instead of 2⁻³² (docs/tokenization.md).
    case compact = 2
    /// 4,096 positions of q = 4, 2 bits per position packed four to a byte, 1 KiB per token: new
    /// tenants and new biometric rotations. Named by its alphabet, the one thing that sets it
    /// apart (its size is compact's): four symbols, two bits of each PRF output. The bits are
    /// truncated, not a bijection, so two different symbols give equal values 1 time in 4; it is
    /// still the 1 KiB shape closest to raw cosine (docs/tokenization.md, "The quaternary format").
    case quaternary = 3

    /// What new `bio` versions get.
    public static let `default` = BiometricTokenFormat.quaternary

    /// m positions of q symbols, and b bits kept per position.
    public var shape: BiometricTokenShape {
        switch self {
        case .wide: BiometricTokenShape(positions: 1_024, symbolsPerPosition: 16, bitsPerValue: 32)!
        case .compact: BiometricTokenShape(positions: 1_024, symbolsPerPosition: 16, bitsPerValue: 8)!
        case .quaternary: BiometricTokenShape(positions: 4_096, symbolsPerPosition: 4, bitsPerValue: 2)!
        }
    }

    /// The format's name in reports and on the command line.
    public var name: String {
        switch self {
        case .wide: "wide"
        case .compact: "compact"
        case .quaternary: "quaternary"
        }
    }

    /// m: values per token.
    public var positions: Int { shape.positions }

    /// Bits of each PRF output block kept per position.
    public var bitsPerValue: Int { shape.bitsPerValue }

    /// Stored bytes per token (values packed: four bytes each wide, one compact, four values to a
    /// byte quaternary).
    public var byteCount: Int { shape.byteCount }

    /// The largest value a position can hold.
    public var maxValue: UInt32 { shape.maxValue }

    public var description: String {
        switch self {
        case .wide: "wide (32 bits per position)"
        case .compact: "compact (8 bits per position)"
        case .quaternary: "quaternary (4,096 positions of 2 bits)"
        }
    }
}

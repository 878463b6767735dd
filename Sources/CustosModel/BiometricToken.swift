/// A protected biometric template (DESIGN §6): the key version that made it, its
/// ``BiometricTokenFormat``, and one pseudo-random value per Index-of-Max position (1,024 of 32
/// or 8 bits in the wide and compact formats, 4,096 of 2 bits in the quaternary one), held in
/// its packed storage form.
///
/// Two tokens are compared by counting equal positions. A token says nothing about the face
/// without the tenant's `bio-prf` key, and tokens made under different key versions are unrelated.
public struct BiometricToken: Sendable, Hashable {
    /// The `bio` key version whose seed and PRF made this token.
    public let keyVersion: Int

    /// The shape of the values (fixed by the key version).
    public let format: BiometricTokenFormat

    /// The storage form, ``BiometricTokenFormat/byteCount`` bytes: the values as little-endian
    /// `UInt32`s (wide), one byte each (compact), or four to a byte (quaternary: position
    /// 4i + k in bits 2k and 2k + 1 of byte i). The key version is not included: store it beside.
    public let bytes: [UInt8]

    /// - Precondition: `values.count == format.positions` and every value fits the format (a
    ///   token always comes from a full PRF output; anything else is a programming error).
    public init(keyVersion: Int, format: BiometricTokenFormat = .wide, values: [UInt32]) {
        precondition(values.count == format.positions, "a \(format.name) token has \(format.positions) values, not \(values.count)")
        precondition(values.allSatisfy { $0 <= format.maxValue }, "a value exceeds the \(format) format")
        self.keyVersion = keyVersion
        self.format = format
        bytes = [UInt8](unsafeUninitializedCapacity: format.byteCount) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            switch format {
            case .wide:
                for (index, value) in values.enumerated() { raw.storeBytes(of: value.littleEndian, toByteOffset: index * 4, as: UInt32.self) }
            case .compact:
                for (index, value) in values.enumerated() { raw[index] = UInt8(truncatingIfNeeded: value) }
            case .quaternary:
                for index in 0..<format.byteCount {
                    let four = values[(4 * index)..<(4 * index + 4)]
                    raw[index] = four.enumerated().reduce(0) { $0 | UInt8(truncatingIfNeeded: $1.element) << UInt8(2 * $1.offset) }
                }
            }
            initialized = format.byteCount
        }
    }

    /// Reads the storage form written by ``bytes`` in `format` (the key version's, which the
    /// length alone does not name); `nil` unless `bytes` has that format's length.
    public init?(keyVersion: Int, format: BiometricTokenFormat, bytes: [UInt8]) {
        guard bytes.count == format.byteCount else { return nil }
        self.keyVersion = keyVersion
        self.format = format
        self.bytes = bytes
    }

    /// The values, one per position, in order (unpacked from ``bytes``).
    public var values: [UInt32] {
        bytes.withUnsafeBytes { raw in
            switch format {
            case .wide: (0..<format.positions).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) }
            case .compact: raw.map(UInt32.init)
            case .quaternary: (0..<format.positions).map { UInt32(raw[$0 / 4] >> UInt8(2 * ($0 % 4)) & 0b11) }
            }
        }
    }

    /// The fraction of positions where both tokens hold the same value, from 0 to 1.
    ///
    /// Tokens of different key versions score 0: their values come from unrelated keys, so any
    /// equal positions would be chance, and a comparison across versions is a caller's mistake
    /// that must never look like a match. Tokens of one version share its format; two formats
    /// under one version never happen (a template of the wrong length is refused when it is
    /// read) and score 0 likewise.
    public func score(against other: BiometricToken) -> Double {
        guard keyVersion == other.keyVersion, format == other.format else { return 0 }
        return Double(matchingPositions(with: other)) / Double(format.positions)
    }

    /// The number of positions where both tokens hold the same value, ignoring key versions.
    ///
    /// - Precondition: both tokens have one format.
    public func matchingPositions(with other: BiometricToken) -> Int {
        precondition(format == other.format, "tokens of one format")
        return bytes.withUnsafeBytes { left in
            other.bytes.withUnsafeBytes { right in
                // SAFETY: both hold `format.byteCount` bytes (checked by every initialiser), a
                // multiple of 64 (``BiometricTokenShape`` makes m·b a multiple of 64 bits, and
                // every format is 1,024 or 4,096 bytes).
                let (a, b, count) = (left.baseAddress!, right.baseAddress!, format.byteCount)
                return switch format {
                case .wide: PackedAgreement.equalWords(a, b, byteCount: count)
                case .compact: PackedAgreement.equalBytes(a, b, byteCount: count)
                case .quaternary: PackedAgreement.equalPairs(a, b, byteCount: count)
                }
            }
        }
    }
}

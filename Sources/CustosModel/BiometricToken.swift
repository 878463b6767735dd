/// A protected biometric template (DESIGN §6): the key version that made it, its
/// ``BiometricTokenFormat``, and 1,024 pseudo-random values, one per Index-of-Max position
/// (32 bits each in the wide format, 8 in the compact one).
///
/// Two tokens are compared by counting equal positions. A token says nothing about the face
/// without the tenant's `bio-prf` key, and tokens made under different key versions are unrelated.
public struct BiometricToken: Sendable, Hashable {
    /// The number of values in every token.
    public static let length = 1024

    /// The bytes of ``bytes`` in the wide format: four per value.
    public static let byteCount = BiometricTokenFormat.wide.byteCount

    /// The `bio` key version whose seed and PRF made this token.
    public let keyVersion: Int

    /// How many bits of each PRF output the values keep (fixed by the key version).
    public let format: BiometricTokenFormat

    /// ``length`` values; position `j` is the PRF of the `j`-th hash symbol, truncated to the
    /// format's bits.
    public let values: [UInt32]

    /// - Precondition: `values.count == BiometricToken.length` and every value fits the format
    ///   (a token always comes from a full PRF output; anything else is a programming error).
    public init(keyVersion: Int, format: BiometricTokenFormat = .wide, values: [UInt32]) {
        precondition(values.count == Self.length, "a biometric token has \(Self.length) values, not \(values.count)")
        precondition(format == .wide || values.allSatisfy { $0 <= format.maxValue }, "a value exceeds the \(format) format")
        self.keyVersion = keyVersion
        self.format = format
        self.values = values
    }

    /// Reads the storage form written by ``bytes``; the format follows from the length (4,096
    /// bytes wide, 1,024 compact); `nil` for any other length.
    public init?(keyVersion: Int, bytes: [UInt8]) {
        guard let format = BiometricTokenFormat(byteCount: bytes.count) else { return nil }
        let width = format.bytesPerValue
        let values = [UInt32](unsafeUninitializedCapacity: Self.length) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for index in 0..<Self.length {
                    buffer[index] = width == 4
                        ? UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
                        : UInt32(raw[index])
                }
            }
            initialized = Self.length
        }
        self.init(keyVersion: keyVersion, format: format, values: values)
    }

    /// The storage form: the values as little-endian `UInt32`s (wide, 4,096 bytes) or one byte
    /// each (compact, 1,024 bytes). The key version is not included: store it beside the bytes.
    public var bytes: [UInt8] {
        let width = format.bytesPerValue
        return [UInt8](unsafeUninitializedCapacity: format.byteCount) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (index, value) in values.enumerated() {
                if width == 4 {
                    raw.storeBytes(of: value.littleEndian, toByteOffset: index * 4, as: UInt32.self)
                } else {
                    raw[index] = UInt8(truncatingIfNeeded: value)
                }
            }
            initialized = format.byteCount
        }
    }

    /// The fraction of positions where both tokens hold the same value, from 0 to 1.
    ///
    /// Tokens of different key versions score 0: their values come from unrelated keys, so any
    /// equal positions would be chance (about 1,024 / 2³² of them), and a comparison across
    /// versions is a caller's mistake that must never look like a match. Tokens of one version
    /// share its format; two formats under one version never happen (a template of the wrong
    /// format is refused when it is read) and score 0 likewise.
    public func score(against other: BiometricToken) -> Double {
        guard keyVersion == other.keyVersion, format == other.format else { return 0 }
        return Double(matchingPositions(with: other)) / Double(Self.length)
    }

    /// The number of positions where both tokens hold the same value, ignoring key versions.
    public func matchingPositions(with other: BiometricToken) -> Int {
        values.withUnsafeBufferPointer { left in
            other.values.withUnsafeBufferPointer { right in
                Self.countEqual(left, right)
            }
        }
    }

    /// Compares 16 values per step. Both buffers hold ``length`` values (the initialiser
    /// enforces it), a multiple of 16.
    @inline(__always)
    private static func countEqual(_ left: UnsafeBufferPointer<UInt32>, _ right: UnsafeBufferPointer<UInt32>) -> Int {
        // SAFETY: both buffers come from `values`, whose count the initialiser fixes at `length`;
        // the loop reads `length` values from each, 16 at a time, with unaligned loads.
        let lhs = UnsafeRawPointer(left.baseAddress!)
        let rhs = UnsafeRawPointer(right.baseAddress!)
        let zero = SIMD16<UInt32>(repeating: 0)
        var counts = zero
        var offset = 0
        while offset < length * 4 {
            let a = lhs.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
            let b = rhs.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
            counts &+= zero.replacing(with: 1, where: a .== b)
            offset += 64
        }
        return Int(counts.wrappedSum())
    }
}

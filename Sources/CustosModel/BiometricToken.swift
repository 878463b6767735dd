/// A protected biometric template (DESIGN §6): the key version that made it and 1,024 pseudo-random
/// 32-bit values, one per Index-of-Max position.
///
/// Two tokens are compared by counting equal positions. A token says nothing about the face
/// without the tenant's `bio-prf` key, and tokens made under different key versions are unrelated.
public struct BiometricToken: Sendable, Hashable {
    /// The number of values in every token.
    public static let length = 1024

    /// The bytes of ``bytes``: four per value.
    public static let byteCount = length * 4

    /// The `bio` key version whose seed and PRF made this token.
    public let keyVersion: Int

    /// ``length`` values; position `j` is the PRF of the `j`-th hash symbol.
    public let values: [UInt32]

    /// - Precondition: `values.count == BiometricToken.length` (a token always comes from a full
    ///   PRF output; anything else is a programming error).
    public init(keyVersion: Int, values: [UInt32]) {
        precondition(values.count == Self.length, "a biometric token has \(Self.length) values, not \(values.count)")
        self.keyVersion = keyVersion
        self.values = values
    }

    /// Reads the storage form written by ``bytes``; `nil` unless `bytes` holds exactly
    /// ``byteCount`` bytes.
    public init?(keyVersion: Int, bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        let values = [UInt32](unsafeUninitializedCapacity: Self.length) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for index in 0..<Self.length {
                    buffer[index] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
                }
            }
            initialized = Self.length
        }
        self.init(keyVersion: keyVersion, values: values)
    }

    /// The compact storage form: the values as little-endian `UInt32`s, ``byteCount`` bytes.
    /// The key version is not included: store it beside the bytes.
    public var bytes: [UInt8] {
        [UInt8](unsafeUninitializedCapacity: Self.byteCount) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (index, value) in values.enumerated() {
                raw.storeBytes(of: value.littleEndian, toByteOffset: index * 4, as: UInt32.self)
            }
            initialized = Self.byteCount
        }
    }

    /// The fraction of positions where both tokens hold the same value, from 0 to 1.
    ///
    /// Tokens of different key versions score 0: their values come from unrelated keys, so any
    /// equal positions would be chance (about 1,024 / 2³² of them), and a comparison across
    /// versions is a caller's mistake that must never look like a match.
    public func score(against other: BiometricToken) -> Double {
        guard keyVersion == other.keyVersion else { return 0 }
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

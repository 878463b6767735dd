/// Arithmetic in GF(2⁸) with the AES polynomial x⁸ + x⁴ + x³ + x + 1 (0x11B), in constant time.
///
/// Shamir shares of root keys are computed here, so every operation runs the same instructions
/// whatever its operands: no log/exp tables (their lookups leak the operand through the cache),
/// no branches and no indices that depend on a value. Multiplication is eight rounds of
/// shift-and-add with masks; the inverse is x²⁵⁴ by a fixed chain of squarings and products.
public enum GF256 {
    /// a + b (and a − b): exclusive or.
    @inline(__always)
    public static func add(_ a: UInt8, _ b: UInt8) -> UInt8 { a ^ b }

    /// a · b, reduced modulo 0x11B.
    public static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a
        var b = b
        var product: UInt8 = 0
        for _ in 0..<8 {
            // mask = 0xFF when the low bit of b is set, else 0x00: no branch.
            product ^= a & (0 &- (b & 1))
            // Multiply a by x; reduce when its top bit falls off (again by mask).
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (0x1B & carry)
            b >>= 1
        }
        return product
    }

    /// a⁻¹ as a²⁵⁴ (Fermat: a²⁵⁵ = 1 for a ≠ 0). The inverse of 0 comes out as 0; callers never
    /// divide by 0 because share indices are distinct and non-zero.
    public static func inverse(_ a: UInt8) -> UInt8 {
        // 254 = 0b11111110: a² · a⁴ · a⁸ · … · a¹²⁸, a fixed sequence of 7 squarings, 6 products.
        var square = multiply(a, a)  // a²
        var result = square
        for _ in 0..<6 {
            square = multiply(square, square)  // a⁴, a⁸, …, a¹²⁸
            result = multiply(result, square)
        }
        return result
    }

    /// a / b = a · b⁻¹.
    public static func divide(_ a: UInt8, _ b: UInt8) -> UInt8 {
        multiply(a, inverse(b))
    }
}

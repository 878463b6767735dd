@testable import Ceremony
import Testing

@Suite("GF(2⁸): constant-time arithmetic against a slow reference")
struct GF256Tests {
    /// Schoolbook: carry-less product of the two polynomials, then reduction by 0x11B, with
    /// ordinary branches — obviously right, and slow.
    static func referenceMultiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var product: UInt16 = 0
        for bit in 0..<8 where (b >> bit) & 1 == 1 { product ^= UInt16(a) << bit }
        for bit in stride(from: 15, through: 8, by: -1) where (product >> bit) & 1 == 1 {
            product ^= 0x11B << (bit - 8)
        }
        return UInt8(product)
    }

    @Test("multiply matches the reference for all 256 × 256 pairs")
    func multiplyAllPairs() {
        var mismatches = 0
        for a in 0...255 {
            for b in 0...255 where GF256.multiply(UInt8(a), UInt8(b)) != Self.referenceMultiply(UInt8(a), UInt8(b)) {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
        // Known values of the AES field (FIPS 197 §4.2: {57} · {83} = {c1}, {57} · {13} = {fe}).
        #expect(GF256.multiply(0x57, 0x83) == 0xC1)
        #expect(GF256.multiply(0x57, 0x13) == 0xFE)
    }

    @Test("inverse is the unique b with a · b = 1, for every non-zero a; 0 maps to 0")
    func inverseAll() {
        for a in 1...255 {
            let found = (1...255).first { Self.referenceMultiply(UInt8(a), UInt8($0)) == 1 }
            #expect(GF256.inverse(UInt8(a)) == found.map(UInt8.init), "inverse of \(a)")
        }
        #expect(GF256.inverse(0) == 0)
        #expect(GF256.divide(GF256.multiply(0x53, 0xCA), 0xCA) == 0x53)
    }
}

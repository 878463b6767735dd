import CustosModel
import Testing

@Suite("Biometric tokens")
struct BiometricTokenTests {
    static func randomToken(_ random: inout TestRandom, version: Int = 1) -> BiometricToken {
        BiometricToken(keyVersion: version, values: (0..<1024).map { _ in UInt32.random(in: 0...7, using: &random) })
    }

    @Test("A token scores 1 against itself")
    func identical() {
        var random = TestRandom(seed: 1)
        let token = Self.randomToken(&random)
        #expect(token.score(against: token) == 1)
    }

    @Test("The SIMD score equals a scalar count")
    func simdMatchesScalar() {
        var random = TestRandom(seed: 2)
        for _ in 0..<50 {
            let first = Self.randomToken(&random), second = Self.randomToken(&random)
            let scalar = zip(first.values, second.values).filter { $0 == $1 }.count
            #expect(first.matchingPositions(with: second) == scalar)
            #expect(first.score(against: second) == Double(scalar) / 1024)
        }
        // Differences in the last and first lanes only.
        let base = Self.randomToken(&random)
        var values = base.values
        values[0] &+= 1
        values[1023] &+= 1
        #expect(base.matchingPositions(with: BiometricToken(keyVersion: 1, values: values)) == 1022)
    }

    @Test("Tokens of different key versions score 0")
    func differentVersions() {
        var random = TestRandom(seed: 3)
        let token = Self.randomToken(&random)
        let other = BiometricToken(keyVersion: 2, values: token.values)
        #expect(token.score(against: other) == 0)
        #expect(token != other)
    }

    @Test("Bytes round trip, little-endian, and wrong lengths are refused")
    func bytes() {
        var random = TestRandom(seed: 4)
        let token = BiometricToken(keyVersion: 9, values: (0..<1024).map { _ in UInt32.random(in: .min ... .max, using: &random) })
        let bytes = token.bytes
        #expect(bytes.count == 4096)
        #expect(Array(bytes[0..<4]) == [UInt8(token.values[0] & 0xFF), UInt8(token.values[0] >> 8 & 0xFF), UInt8(token.values[0] >> 16 & 0xFF), UInt8(token.values[0] >> 24)])
        #expect(BiometricToken(keyVersion: 9, format: .wide, bytes: bytes) == token)
        #expect(BiometricToken(keyVersion: 9, format: .wide, bytes: Array(bytes.dropLast())) == nil)
        #expect(BiometricToken(keyVersion: 9, format: .wide, bytes: bytes + [0]) == nil)
    }
}

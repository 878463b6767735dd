import CustosModel
import Testing
import Tokenization

/// The quaternary token format (4,096 positions of q = 4, 2 bits each, DESIGN §6 step 4): its
/// packed storage, its SWAR score against a per-position loop, and how it comes from the PRF.
@Suite("Quaternary biometric tokens")
struct QuaternaryTokenTests {
    static func randomValues(_ random: inout TestRandom) -> [UInt32] {
        (0..<4096).map { _ in UInt32.random(in: 0...3, using: &random) }
    }

    static func token(_ values: [UInt32], version: Int = 1) -> BiometricToken {
        BiometricToken(keyVersion: version, format: .quaternary, values: values)
    }

    /// The reference: one position at a time, on the unpacked values.
    static func naiveMatches(_ left: [UInt32], _ right: [UInt32]) -> Int {
        var equal = 0
        for index in 0..<left.count where left[index] == right[index] { equal += 1 }
        return equal
    }

    @Test("The format: 4,096 × 4, 2 bits, 1,024 bytes (compact's length), raw value 3, the default for new versions")
    func format() {
        let format = BiometricTokenFormat.quaternary
        #expect(format.positions == 4096 && format.shape.symbolsPerPosition == 4 && format.bitsPerValue == 2)
        #expect(format.byteCount == 1024 && format.byteCount == BiometricTokenFormat.compact.byteCount, "the length cannot name the format")
        #expect(format.shape.projectionCount == BiometricTokenFormat.compact.shape.projectionCount, "projection cost unchanged")
        #expect(format.rawValue == 3 && BiometricTokenFormat(rawValue: 3) == .quaternary)
        #expect(BiometricTokenFormat.default == .quaternary)
    }

    @Test("4,096 values pack four to a byte (position 4i + k in bits 2k of byte i) and round trip only in their own format")
    func packing() throws {
        var random = TestRandom(seed: 51)
        let values = Self.randomValues(&random)
        let token = Self.token(values)
        #expect(token.bytes.count == 1024)
        #expect(token.values == values)
        for index in [0, 1, 2, 3, 4, 1021, 4095] {
            #expect(UInt32(token.bytes[index / 4] >> UInt8(2 * (index % 4)) & 3) == values[index], "position \(index)")
        }
        #expect(BiometricToken(keyVersion: 1, format: .quaternary, bytes: token.bytes) == token)
        // The same 1,024 bytes read as compact are another token: the version's format decides.
        let asCompact = try #require(BiometricToken(keyVersion: 1, format: .compact, bytes: token.bytes))
        #expect(asCompact.values.count == 1024 && asCompact != token)
        for length in [0, 1023, 1025, 4096] {
            #expect(BiometricToken(keyVersion: 1, format: .quaternary, bytes: [UInt8](repeating: 0, count: length)) == nil, "\(length) bytes")
        }
    }

    @Test("The packed 2-bit score equals a per-position loop, including all equal, all different and single positions")
    func packedScoreMatchesNaive() {
        var random = TestRandom(seed: 52)
        var pairs = [([UInt32], [UInt32])]()
        for _ in 0..<60 { pairs.append((Self.randomValues(&random), Self.randomValues(&random))) }
        // Close pairs: a few positions changed, so counts near 4,096 are exercised too.
        for _ in 0..<20 {
            let base = Self.randomValues(&random)
            var changed = base
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let index = Int.random(in: 0..<4096, using: &random)
                changed[index] = (changed[index] + UInt32.random(in: 1...3, using: &random)) % 4
            }
            pairs.append((base, changed))
        }
        let base = Self.randomValues(&random)
        pairs.append((base, base))  // all equal
        // All different, by the low bit only, the high bit only, and both: each way a lane can differ.
        for flip: UInt32 in [1, 2, 3] { pairs.append((base, base.map { $0 ^ flip })) }
        // One position differs: the first, the last, and the high bit of a lane at a word boundary.
        for (index, flip) in [(0, UInt32(1)), (4095, 2), (15, 2), (16, 1), (2047, 3)] {
            var one = base
            one[index] ^= flip
            pairs.append((base, one))
        }
        for (left, right) in pairs {
            let naive = Self.naiveMatches(left, right)
            let a = Self.token(left), b = Self.token(right)
            #expect(a.matchingPositions(with: b) == naive)
            #expect(a.score(against: b) == Double(naive) / 4096)
        }
        #expect(Self.token(base).score(against: Self.token(base)) == 1)
        #expect(Self.token(base).score(against: Self.token(base.map { $0 ^ 3 })) == 0)
    }

    @Test("A quaternary token never compares with another format or another version")
    func formatsDoNotMix() throws {
        var random = TestRandom(seed: 53)
        let token = Self.token(Self.randomValues(&random))
        let compact = try #require(BiometricToken(keyVersion: 1, format: .compact, bytes: token.bytes))
        #expect(token.score(against: compact) == 0, "same bytes, another format: 0")
        #expect(token.score(against: Self.token(token.values, version: 2)) == 0)
    }

    @Test("A quaternary value is the top 2 bits of the first byte of its position's PRF block")
    func valuesFromPRF() throws {
        var random = TestRandom(seed: 54)
        let shape = BiometricTokenFormat.quaternary.shape
        let output = (0..<PRFBlocks.byteCount(for: shape)).map { _ in UInt8.random(in: 0...255, using: &random) }
        #expect(output.count == 4096 * 16)
        let values = try PRFBlocks.tokenValues(fromPRFOutput: output, format: .quaternary)
        #expect(values == (0..<4096).map { UInt32(output[$0 * 16] >> 6) })
        #expect(throws: PRFBlocksError.wrongOutputLength(16_384, expected: 65_536)) {
            _ = try PRFBlocks.tokenValues(fromPRFOutput: [UInt8](repeating: 0, count: 16_384), format: .quaternary)
        }
    }
}

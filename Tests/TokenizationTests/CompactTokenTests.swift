import CustosModel
import Testing
import Tokenization

/// The compact token format (8 bits per position, DESIGN §6 step 4): storage, scores, and how it
/// comes from the PRF output.
@Suite("Compact biometric tokens")
struct CompactTokenTests {
    static func randomBytes(_ random: inout TestRandom, count: Int = 1024, below: UInt8 = .max) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...below, using: &random) }
    }

    @Test("1,024 bytes round trip in the compact format; other lengths are refused")
    func roundTrip() throws {
        var random = TestRandom(seed: 21)
        let bytes = Self.randomBytes(&random)
        let token = try #require(BiometricToken(keyVersion: 3, format: .compact, bytes: bytes))
        #expect(token.format == .compact)
        #expect(token.values == bytes.map(UInt32.init), "one byte per position, in order")
        #expect(token.bytes == bytes)
        #expect(BiometricToken(keyVersion: 3, format: .compact, bytes: token.bytes) == token)
        let wide = BiometricToken(keyVersion: 3, format: .wide, values: token.values)
        #expect(wide.bytes.count == 4096 && BiometricToken(keyVersion: 3, format: .wide, bytes: wide.bytes) == wide)
        #expect(BiometricToken(keyVersion: 3, format: .compact, bytes: wide.bytes) == nil, "a wide length is not compact")
        for length in [0, 1023, 1025, 2048, 4095, 4097] {
            #expect(BiometricToken(keyVersion: 3, format: .compact, bytes: [UInt8](repeating: 0, count: length)) == nil, "\(length) bytes is not compact")
        }
    }

    @Test("The score of compact tokens is the count of equal bytes, computed independently")
    func scoreIsEqualBytes() throws {
        var random = TestRandom(seed: 22)
        for round in 0..<40 {
            // Few distinct values so that many positions agree (and all lanes are exercised).
            let left = Self.randomBytes(&random, below: round % 2 == 0 ? 3 : 255)
            let right = Self.randomBytes(&random, below: round % 2 == 0 ? 3 : 255)
            var equal = 0
            for index in 0..<1024 where left[index] == right[index] { equal += 1 }
            let a = try #require(BiometricToken(keyVersion: 1, format: .compact, bytes: left))
            let b = try #require(BiometricToken(keyVersion: 1, format: .compact, bytes: right))
            #expect(a.matchingPositions(with: b) == equal)
            #expect(a.score(against: b) == Double(equal) / 1024)
        }
    }

    @Test("A compact and a wide token of one version never compare, nor do two versions")
    func formatsDoNotMix() throws {
        var random = TestRandom(seed: 23)
        let bytes = Self.randomBytes(&random)
        let compact = try #require(BiometricToken(keyVersion: 1, format: .compact, bytes: bytes))
        let wide = BiometricToken(keyVersion: 1, format: .wide, values: compact.values)
        #expect(compact.values == wide.values, "equal values")
        #expect(compact.score(against: wide) == 0, "but another format scores 0")
        #expect(compact.score(against: BiometricToken(keyVersion: 2, format: .compact, values: compact.values)) == 0)
    }

    @Test("A compact value is the top byte of the wide value of the same PRF output")
    func compactIsTopByte() throws {
        var random = TestRandom(seed: 24)
        let output = Self.randomBytes(&random, count: PRFBlocks.byteCount(for: BiometricTokenFormat.compact.shape))
        let wide = try PRFBlocks.tokenValues(fromPRFOutput: output, format: .wide)
        let compact = try PRFBlocks.tokenValues(fromPRFOutput: output, format: .compact)
        #expect(compact == (0..<1024).map { UInt32(output[$0 * 16]) }, "the first byte of each 16-byte block")
        #expect(compact == wide.map { $0 >> 24 })
        #expect(throws: PRFBlocksError.wrongOutputLength(16, expected: 16_384)) { _ = try PRFBlocks.tokenValues(fromPRFOutput: [UInt8](repeating: 0, count: 16), format: .compact) }
    }
}

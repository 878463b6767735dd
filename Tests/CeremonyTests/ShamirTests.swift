@testable import Ceremony
@testable import SecureMemory
import Testing

@Suite("Shamir secret sharing over GF(2⁸)")
struct ShamirTests {
    let material = secret((0..<64).map { UInt8(($0 * 37 + 11) & 0xFF) })

    @Test("Every 3-, 4- and 5-subset of a 3-of-5 split gives the secret back")
    func everySubsetReconstructs() async throws {
        let shares = try await Shamir.split(material, threshold: 3, count: 5, random: SeededRandomSource(seed: 1))
        #expect(shares.map(\.index) == [1, 2, 3, 4, 5])
        #expect(shares.allSatisfy { $0.value.count == 64 })
        var checked = 0
        for size in 3...5 {
            for subset in subsets(shares, size: size) {
                #expect(try Shamir.combine(subset) == material, "indices \(subset.map(\.index))")
                // Order does not matter.
                #expect(try Shamir.combine(subset.reversed()) == material)
                checked += 1
            }
        }
        #expect(checked == 10 + 5 + 1)
    }

    @Test("Two shares of a 3-of-5 split do not give the secret (and shares differ from it)")
    func belowThresholdFails() async throws {
        let shares = try await Shamir.split(material, threshold: 3, count: 5, random: SeededRandomSource(seed: 2))
        for pair in subsets(shares, size: 2) {
            #expect(try Shamir.combine(pair) != material, "indices \(pair.map(\.index))")
        }
        for share in shares { #expect(bytes(of: share.value) != bytes(of: material)) }
    }

    @Test("Shares are the polynomial s + a₁x + a₂x² at x = index (known coefficients)")
    func knownAnswer() {
        let secretBytes: [UInt8] = [0x42, 0x00]
        // byte 0: a₁ = 0x03, a₂ = 0x05; byte 1: a₁ = 0xFF, a₂ = 0x01.
        let shares = Shamir.split(secret(secretBytes), threshold: 3, count: 4, coefficients: secret([0x03, 0x05, 0xFF, 0x01]))
        for share in shares {
            let x = share.index
            let x2 = GF256Tests.referenceMultiply(x, x)
            let expected0 = 0x42 ^ GF256Tests.referenceMultiply(0x03, x) ^ GF256Tests.referenceMultiply(0x05, x2)
            let expected1 = 0x00 ^ GF256Tests.referenceMultiply(0xFF, x) ^ GF256Tests.referenceMultiply(0x01, x2)
            #expect(bytes(of: share.value) == [expected0, expected1], "share \(x)")
        }
    }

    @Test("Deterministic with a seeded source, different with another seed")
    func deterministic() async throws {
        let first = try await Shamir.split(material, threshold: 2, count: 3, random: SeededRandomSource(seed: 7))
        let again = try await Shamir.split(material, threshold: 2, count: 3, random: SeededRandomSource(seed: 7))
        let other = try await Shamir.split(material, threshold: 2, count: 3, random: SeededRandomSource(seed: 8))
        #expect(zip(first, again).allSatisfy { $0.value == $1.value })
        #expect(!zip(first, other).allSatisfy { $0.value == $1.value })
    }

    @Test("Parameters outside 2 ≤ M ≤ N ≤ 255 and bad share sets are refused")
    func invalid() async throws {
        let random = SeededRandomSource(seed: 3)
        for (m, n) in [(1, 5), (6, 5), (2, 256), (0, 0)] {
            await #expect(throws: ShamirError.invalidParameters(threshold: m, count: n)) {
                _ = try await Shamir.split(material, threshold: m, count: n, random: random)
            }
        }
        let shares = try await Shamir.split(material, threshold: 2, count: 255, random: random)
        #expect(try Shamir.combine([shares[0], shares[254]]) == material)
        #expect(throws: ShamirError.duplicateIndex(1)) { try Shamir.combine([shares[0], shares[0]]) }
        #expect(throws: ShamirError.noShares) { try Shamir.combine([]) }
        #expect(throws: ShamirError.invalidIndex(0)) { try Shamir.combine([ShamirShare(index: 0, value: secret([1]))]) }
    }
}

@Suite("Hex of secrets")
struct HexTests {
    @Test("Branch-free hex digits equal the table, and secret hex round-trips")
    func digits() {
        for nibble in 0..<16 as Range<UInt8> { #expect(Hex.digit(nibble) == Hex.digits[Int(nibble)]) }
        let value = secret((0...255).map(UInt8.init))
        let hex = Hex.encode(secret: value)
        #expect(bytes(of: hex) == Array(Hex.encode(bytes(of: value)).utf8))
        #expect(hex.withUnsafeBytes { Hex.decode(secret: $0) } == value)
    }
}

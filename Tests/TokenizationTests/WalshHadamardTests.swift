import Testing
import Tokenization

@Suite("Fast Walsh–Hadamard transform")
struct WalshHadamardTests {
    /// `H[i][j] = (−1)^popcount(i & j)`.
    static func naive(_ x: [Float]) -> [Float] {
        x.indices.map { i in
            x.indices.reduce(Float(0)) { sum, j in
                sum + ((i & j).nonzeroBitCount % 2 == 0 ? x[j] : -x[j])
            }
        }
    }

    @Test("Equals the matrix product", arguments: [1, 2, 4, 8, 16, 32, 64, 128, 256])
    func matchesMatrix(size: Int) {
        var random = TestRandom(seed: UInt64(size))
        let input = (0..<size).map { _ in Float(Int.random(in: -1000...1000, using: &random)) / 8 }
        var fast = input
        WalshHadamard.transform(&fast)
        // Small multiples of 1/8 add exactly in `Float`, so both orders give the same result.
        #expect(fast == Self.naive(input))
    }

    @Test("Applying it twice multiplies by n")
    func involution() {
        var random = TestRandom(seed: 3)
        let input = (0..<512).map { _ in random.normal() }
        var twice = input
        WalshHadamard.transform(&twice)
        WalshHadamard.transform(&twice)
        #expect(zip(twice, input).allSatisfy { abs($0 / 512 - $1) < 1e-4 })
    }
}

import SecureMemory
import Testing
import Tokenization

@Suite("Index-of-Max hashing")
struct IndexOfMaxHashingTests {
    /// Dense projections are slow to derive and apply in debug builds: test them at d = 128 there.
    static let cases: [(IndexOfMaxHashing.ProjectionKind, Int)] = [
        (.structured, 512), (.structured, 128), (.denseGaussian, Build.isOptimized ? 512 : 128),
    ]

    @Test("Same vector and seed give the same symbols, 1,024 of them in 0..<16", arguments: cases)
    func deterministic(kind: IndexOfMaxHashing.ProjectionKind, dimension: Int) throws {
        var random = TestRandom(seed: 1)
        let vector = random.unitVector(dimension: dimension)
        let first = try SharedProjections.hashing(seed: seed(1), dimension: dimension, kind: kind)
        let second = try IndexOfMaxHashing(seed: seed(1), dimension: dimension, kind: kind)
        let symbols = try first.plainSymbols(for: vector)
        #expect(symbols.count == 1024)
        #expect(symbols.allSatisfy { $0 < 16 })
        #expect(Set(symbols).count == 16)
        #expect(try second.plainSymbols(for: vector) == symbols)
        // Scale does not matter: the vector is normalised first.
        #expect(try first.plainSymbols(for: vector.map { $0 * 40 }) == symbols)
        #expect(try first.symbols(for: FeatureVector(vector)) == second.symbols(for: FeatureVector(vector)))
    }

    @Test("Similar vectors share most symbols, unrelated ones about 1/16", arguments: cases)
    func similarity(kind: IndexOfMaxHashing.ProjectionKind, dimension: Int) throws {
        var random = TestRandom(seed: 2)
        let hashing = try SharedProjections.hashing(seed: seed(1), dimension: dimension, kind: kind)
        for _ in 0..<2 {
            let base = random.unitVector(dimension: dimension)
            let symbols = try hashing.plainSymbols(for: base)
            let near = try hashing.plainSymbols(for: random.unitVector(near: base, cosine: 0.95))
            // Orthogonal: two independent random vectors have cosine 0 ± 1/√d, and at d = 128 that
            // alone moves the expected agreement by ± 0.02.
            let unrelated = try hashing.plainSymbols(for: random.unitVector(near: base, cosine: 0))
            // Expected about 0.71 at cosine 0.95 and 0.0625 ± 0.0076 at cosine 0.
            #expect(agreement(symbols, near) > 0.6)
            #expect((0.03...0.10).contains(agreement(symbols, unrelated)))
        }
    }

    @Test("Different seeds give unrelated symbols for the same vector", arguments: cases)
    func seedsMatter(kind: IndexOfMaxHashing.ProjectionKind, dimension: Int) throws {
        var random = TestRandom(seed: 3)
        let vector = random.unitVector(dimension: dimension)
        let first = try SharedProjections.hashing(seed: seed(1), dimension: dimension, kind: kind)
        var otherSeed = seed(1)
        otherSeed[31] ^= 1
        let second = try IndexOfMaxHashing(seed: otherSeed, dimension: dimension, kind: kind)
        #expect((0.03...0.10).contains(agreement(try first.plainSymbols(for: vector), try second.plainSymbols(for: vector))))
    }

    @Test("The two projection kinds are different projections")
    func kindsDiffer() throws {
        var random = TestRandom(seed: 4)
        let vector = random.unitVector(dimension: 128)
        let structured = try SharedProjections.hashing(seed: seed(1), dimension: 128, kind: .structured)
        let dense = try SharedProjections.hashing(seed: seed(1), dimension: 128, kind: .denseGaussian)
        #expect(agreement(try structured.plainSymbols(for: vector), try dense.plainSymbols(for: vector)) < 0.10)
    }

    @Test("A seed in SecretBytes gives the same projection")
    func secretSeed() throws {
        var random = TestRandom(seed: 5)
        let vector = random.unitVector(dimension: 256)
        let plain = try IndexOfMaxHashing(seed: seed(5), dimension: 256, kind: .structured)
        let secret = try IndexOfMaxHashing(seed: SecretBytes(seed(5)), dimension: 256, kind: .structured)
        #expect(try plain.plainSymbols(for: vector) == secret.plainSymbols(for: vector))
    }

    @Test("Symbols are pinned: the projection derivation is part of the token format")
    func pinned() throws {
        var values = [Float](repeating: 0, count: 128)
        for index in values.indices { values[index] = Float(index % 7) - 3 }
        let symbols = try IndexOfMaxHashing(seed: seed(9), dimension: 128, kind: .structured).plainSymbols(for: values)
        #expect(Array(symbols.prefix(16)) == Self.pinnedPrefix)
    }

    static let pinnedPrefix: [UInt8] = [2, 0, 11, 8, 6, 1, 1, 8, 5, 9, 0, 8, 10, 14, 10, 7]

    @Test("Bad seeds, dimensions and mismatched vectors are refused")
    func errors() throws {
        #expect(throws: IndexOfMaxHashingError.wrongSeedLength(31)) {
            try IndexOfMaxHashing(seed: [UInt8](repeating: 0, count: 31), dimension: 512, kind: .structured)
        }
        #expect(throws: IndexOfMaxHashingError.unsupportedDimension(384)) {
            try IndexOfMaxHashing(seed: seed(0), dimension: 384, kind: .structured)
        }
        let hashing = try IndexOfMaxHashing(seed: seed(0), dimension: 512, kind: .structured)
        #expect(throws: IndexOfMaxHashingError.dimensionMismatch(expected: 512, actual: 256)) {
            try hashing.symbols(for: FeatureVector([Float](repeating: 1, count: 256)))
        }
    }
}

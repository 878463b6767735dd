import CustosModel
import HSM
import HSMTestSupport
import SecureMemory
import Testing
import Tokenization
import TokenizationEvaluation

/// Token shapes other than the formats' (m positions, q projections per symbol, b bits), which
/// `custos-bench eval run --positions --bits --symbols` compares through the real pipeline.
@Suite("Token shapes")
struct TokenShapeTests {
    @Test("Shapes the pipeline can make are accepted; the others are refused")
    func validation() {
        for format in [BiometricTokenFormat.wide, .compact] {
            #expect(BiometricTokenShape(positions: 1024, symbolsPerPosition: 16, bitsPerValue: format.bitsPerValue) == format.shape)
        }
        #expect(BiometricTokenShape(positions: 4096, symbolsPerPosition: 4, bitsPerValue: 2) == BiometricTokenFormat.quaternary.shape)
        for (m, q, b) in [(2048, 16, 4), (1536, 16, 5), (2560, 16, 4), (4096, 4, 2), (8192, 2, 32), (1024, 128, 7)] {
            #expect(BiometricTokenShape(positions: m, symbolsPerPosition: q, bitsPerValue: b) != nil, "m \(m), q \(q), b \(b)")
        }
        #expect(BiometricTokenShape(positions: 2048, symbolsPerPosition: 16, bitsPerValue: 4)?.byteCount == 1024)
        let refused = [
            (1024, 12, 8), (1024, 1, 8), (1024, 256, 8),  // q not a power of two from 2 to 128
            (1000, 16, 8), (96, 8, 8),  // m·q not whole rounds
            (1024, 16, 0), (1024, 16, 33),  // b out of range
            (1032, 128, 5),  // m·b not whole 64-bit words
            (131_072, 2, 8), (0, 16, 8),  // m out of range
        ]
        for (m, q, b) in refused {
            #expect(BiometricTokenShape(positions: m, symbolsPerPosition: q, bitsPerValue: b) == nil, "m \(m), q \(q), b \(b)")
        }
    }

    @Test("Index-of-Max hashing makes m symbols below q, and a longer shape of one q starts with the shorter one's symbols")
    func hashingShapes() throws {
        var random = TestRandom(seed: 41)
        // d = 128 keeps the dense matrices small (a debug build draws each entry slowly).
        let values = random.unitVector(dimension: 128)
        for kind in [IndexOfMaxHashing.ProjectionKind.structured, .denseGaussian] {
            let original = try IndexOfMaxHashing(seed: seed(3), dimension: 128, kind: kind).plainSymbols(for: values)
            let longer = try IndexOfMaxHashing(
                seed: seed(3), dimension: 128, kind: kind, shape: BiometricTokenShape(positions: 2048, symbolsPerPosition: 16, bitsPerValue: 4)!
            ).plainSymbols(for: values)
            #expect(original.count == 1024 && longer.count == 2048)
            #expect(Array(longer.prefix(1024)) == original, "\(kind): the generator's stream goes on")
        }
        for q in [2, 4, 32, 128] {
            let shape = BiometricTokenShape(positions: 8192 / q * 4, symbolsPerPosition: q, bitsPerValue: 32)!
            let symbols = try IndexOfMaxHashing(seed: seed(4), dimension: 128, kind: .structured, shape: shape).plainSymbols(for: values)
            #expect(symbols.count == shape.positions)
            #expect(symbols.allSatisfy { Int($0) < q })
            if q <= 32 { #expect(Set(symbols).count == q, "q = \(q): every index is some position's maximum") }
        }
    }

    @Test("A shape's values are the top b bits of each block's first four bytes; a wrong length names the expected one")
    func prfValues() throws {
        var random = TestRandom(seed: 42)
        let shape = BiometricTokenShape(positions: 2048, symbolsPerPosition: 16, bitsPerValue: 4)!
        let output = random.bytes(PRFBlocks.byteCount(for: shape))
        let values = try PRFBlocks.tokenValues(fromPRFOutput: output, shape: shape)
        #expect(values == (0..<2048).map { UInt32(output[$0 * 16] >> 4) })
        let wide = try PRFBlocks.tokenValues(fromPRFOutput: output, shape: BiometricTokenShape(positions: 2048, symbolsPerPosition: 16, bitsPerValue: 32)!)
        #expect(values == wide.map { $0 >> 28 })
        #expect(throws: PRFBlocksError.wrongOutputLength(16_384, expected: 32_768)) {
            _ = try PRFBlocks.tokenValues(fromPRFOutput: Array(output.prefix(16_384)), shape: shape)
        }
        // One block per symbol whatever m is, the position numbered in 16 bits.
        let blocks = PRFBlocks(tenant: TenantID("11111111-2222-4333-8444-555555555555")!, keyVersion: 1)
        let input = blocks.input(for: SecretBytes([UInt8](repeating: 3, count: 2048))).withUnsafeBytes { Array($0) }
        #expect(input.count == 2048 * 16)
        #expect(Array(input[(2047 * 16 + 8)..<(2047 * 16 + 11)]) == [0x07, 0xFF, 3])
    }

    @Test("Through the HSM, a format's own shape gives its tokens' values; another shape its own m values of b bits")
    func tokenizerShapes() async throws {
        let token = try TestToken.make("shapes")
        let pool = try SessionPool(configuration: token.configuration(), logger: LogCapture().logger)
        try await pool.start()
        let tenant = TenantID("11111111-2222-4333-8444-555555555555")!
        let tokenizer = BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1], format: .compact), kind: .structured)
        var random = TestRandom(seed: 43)
        let features = try FeatureVector(random.unitVector(dimension: 512))
        let compact = try await tokenizer.tokenize(features, tenant: tenant, version: 1)
        #expect(try await tokenizer.values(of: features, tenant: tenant, version: 1, shape: BiometricTokenFormat.compact.shape) == compact.values)
        let wide = try await tokenizer.values(of: features, tenant: tenant, version: 1, shape: BiometricTokenFormat.wide.shape)
        #expect(compact.values == wide.map { $0 >> 24 }, "one PRF, fewer bits")
        let shape = BiometricTokenShape(positions: 2048, symbolsPerPosition: 16, bitsPerValue: 4)!
        let packed = try await tokenizer.values(of: features, tenant: tenant, version: 1, shape: shape)
        #expect(packed.count == 2048 && packed.allSatisfy { $0 < 16 })
        #expect(Array(packed.prefix(1024)) == compact.values.map { $0 >> 4 }, "the first 1,024 symbols are the compact token's")
        await pool.shutdown()
    }
}

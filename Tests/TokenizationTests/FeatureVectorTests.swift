import Testing
import Tokenization

@Suite("Feature vectors")
struct FeatureVectorTests {
    @Test("Only 128, 256, 512 and 1,024 values are accepted", arguments: [0, 1, 127, 129, 300, 511, 513, 1023, 2048])
    func wrongDimension(count: Int) {
        #expect(throws: FeatureVectorError.wrongDimension(count)) {
            try FeatureVector([Float](repeating: 1, count: count))
        }
    }

    @Test("Supported dimensions are accepted", arguments: FeatureVector.supportedDimensions)
    func supportedDimension(count: Int) throws {
        #expect(try FeatureVector([Float](repeating: 1, count: count)).dimension == count)
    }

    @Test("NaN and infinities are refused with the index of the first", arguments: [Float.nan, .infinity, -.infinity, .signalingNaN])
    func notFinite(bad: Float) {
        var values = [Float](repeating: 0.5, count: 256)
        values[77] = bad
        values[200] = .nan
        #expect(throws: FeatureVectorError.notFinite(index: 77)) { try FeatureVector(values) }
    }

    @Test("An all-zero vector is refused")
    func zeroNorm() {
        #expect(throws: FeatureVectorError.zeroNorm) { try FeatureVector([Float](repeating: 0, count: 512)) }
        #expect(throws: FeatureVectorError.zeroNorm) { try FeatureVector([Float](repeating: -0.0, count: 128)) }
    }

    @Test("Values are scaled to unit length, direction kept, even when tiny or huge")
    func normalises() throws {
        for scale: Float in [.leastNormalMagnitude / 64, 1, 3e37] {
            var values = [Float](repeating: 0, count: 128)
            values[0] = 3 * scale
            values[5] = -4 * scale
            let vector = try FeatureVector(values)
            vector.withUnsafeValues { unit in
                #expect(abs(unit[0] - 0.6) < 1e-6)
                #expect(abs(unit[5] + 0.8) < 1e-6)
                #expect(unit.enumerated().allSatisfy { $0.offset == 0 || $0.offset == 5 || $0.element == 0 })
            }
            #expect(abs(vector.cosineSimilarity(to: vector)! - 1) < 1e-6)
        }
    }

    @Test("Cosine similarity of normalised vectors; nil across dimensions")
    func cosine() throws {
        var random = TestRandom(seed: 7)
        let base = random.unitVector(dimension: 512)
        let near = random.unitVector(near: base, cosine: 0.8)
        let first = try FeatureVector(base.map { $0 * 9 })
        #expect(abs(try first.cosineSimilarity(to: FeatureVector(near))! - 0.8) < 1e-4)
        #expect(try first.cosineSimilarity(to: FeatureVector(random.unitVector(dimension: 256))) == nil)
    }

    @Test("Descriptions never show values")
    func redacted() throws {
        let vector = try FeatureVector([Float](repeating: 0.123456, count: 128))
        #expect(vector.description == "FeatureVector(<redacted>, 128 values)")
        #expect(!String(reflecting: vector).contains("0.0883"))
        #expect("\(FeatureVectorError.notFinite(index: 3))" == "embedding value 3 (counting from 0) is NaN or infinite")
        #expect("\(FeatureVectorError.wrongDimension(5))".contains("not 5"))
    }
}

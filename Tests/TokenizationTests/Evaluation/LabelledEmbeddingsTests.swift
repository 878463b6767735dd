import Foundation
import Testing
import Tokenization
import TokenizationEvaluation

@Suite("Labelled embeddings files")
struct LabelledEmbeddingsTests {
    @Test("Parses labels and values; CRLF, spaces and blank lines are fine")
    func parses() throws {
        let set = try LabelledEmbeddings(csv: "alice, 1, 2.5,-3\r\n\nbob,4,5e-1,6\n  \ncarol,0,0,1e2\n")
        #expect(set.count == 3 && set.dimension == 3)
        #expect(set.labels == ["alice", "bob", "carol"])
        #expect(Array(set.values(at: 1)) == [4, 0.5, 6])
        #expect(Array(set.values(at: 2)) == [0, 0, 100])
    }

    @Test("Malformed lines are reported by line and column, never with their values", arguments: [
        ("a,1,2\n,3,4\n", LabelledEmbeddingsError.malformedLine(2, .missingLabel)),
        ("a,1,2\nb\n", .malformedLine(2, .noFeatures)),
        ("a,1,2\n\nb,1,2,3\n", .malformedLine(3, .wrongFeatureCount(expected: 2, found: 3))),
        ("a,1,2\nb,1\n", .malformedLine(2, .wrongFeatureCount(expected: 2, found: 1))),
        ("a,1,2\nb,1,0.7x5\n", .malformedLine(2, .notANumber(column: 3))),
        ("a,1,\n", .malformedLine(1, .notANumber(column: 3))),
        ("a,nan,2\n", .malformedLine(1, .notFinite(column: 2))),
        ("a,1,-inf\n", .malformedLine(1, .notFinite(column: 3))),
        ("a,1,4e39\n", .malformedLine(1, .notFinite(column: 3))),
        ("\n\n", .noSamples),
    ])
    func malformed(text: String, error: LabelledEmbeddingsError) {
        #expect(throws: error) { try LabelledEmbeddings(csv: text) }
        #expect(!"\(error)".contains("0.7x5"))
    }

    @Test("Error descriptions name the line and column")
    func descriptions() {
        #expect("\(LabelledEmbeddingsError.malformedLine(12, .notANumber(column: 40)))" == "embeddings line 12: column 40 is not a number")
    }

    @Test("CSV round trip is exact, through a file too")
    func roundTrip() throws {
        let synthetic = SyntheticEmbeddings(configuration: .init(identities: 3, samplesPerIdentity: 2, dimension: 128, seed: 5))
        let text = synthetic.csv()
        #expect(text.split(separator: "\n").count == 6)
        #expect(text.hasPrefix("subject-0,"))
        let parsed = try LabelledEmbeddings(csv: text)
        #expect(parsed.labels == synthetic.embeddings.labels)
        for index in 0..<parsed.count {
            #expect(parsed.values(at: index) == synthetic.embeddings.values(at: index))
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("custos-embeddings-\(UUID()).csv")
        try text.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        #expect(try LabelledEmbeddings(contentsOfFile: url.path).csv() == text)
        #expect(throws: LabelledEmbeddingsError.unreadableFile(path: url.path + ".missing")) {
            try LabelledEmbeddings(contentsOfFile: url.path + ".missing")
        }
    }

    @Test("Samples become validated feature vectors")
    func featureVectors() throws {
        let set = try LabelledEmbeddings(csv: "a,1,2\n")
        #expect(throws: FeatureVectorError.wrongDimension(2)) { try set.featureVector(at: 0) }
        let synthetic = SyntheticEmbeddings(configuration: .init(identities: 1, samplesPerIdentity: 1, dimension: 256, seed: 1))
        #expect(try synthetic.embeddings.featureVector(at: 0).dimension == 256)
    }
}

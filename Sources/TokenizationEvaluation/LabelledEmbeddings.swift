public import Tokenization
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A labelled set of embeddings for accuracy evaluation: one sample per line of a CSV file,
/// `label,f1,f2,…,fd`, no header, every line with the same d.
///
/// Lines may end in `\n` or `\r\n`; blank lines are skipped; spaces around fields are ignored;
/// labels cannot contain commas (there is no quoting). Values are kept as given (not normalised).
///
/// - Warning: evaluation data only: the values sit in ordinary memory, unlike ``FeatureVector``.
public struct LabelledEmbeddings: Sendable {
    /// The number of values per sample.
    public let dimension: Int
    /// One label per sample; equal labels mean the same subject.
    public let labels: [String]
    // `labels.count × dimension` values, sample by sample.
    private let storage: [Float]

    /// The number of samples.
    public var count: Int { labels.count }

    /// Wraps samples already in memory.
    ///
    /// - Parameters:
    ///   - values: `labels.count × dimension` values, sample after sample.
    /// - Precondition: `dimension > 0`, the counts agree, and no label is empty or holds a comma,
    ///   a line break or surrounding spaces (so ``csv()`` reads back the same).
    public init(dimension: Int, labels: [String], values: [Float]) {
        precondition(dimension > 0 && values.count == labels.count * dimension, "need labels.count × dimension values")
        for label in labels {
            precondition(Self.isWritable(label), "labels must be non-empty, without commas, line breaks or surrounding spaces")
        }
        self.dimension = dimension
        self.labels = labels
        storage = values
    }

    /// Parses the CSV format.
    ///
    /// - Throws: ``LabelledEmbeddingsError/noSamples`` for a file without samples,
    ///   ``LabelledEmbeddingsError/malformedLine(_:_:)`` naming the first bad line (from 1) and
    ///   column (the label is column 1). Errors never contain the values.
    public init(csv: String) throws(LabelledEmbeddingsError) {
        var labels: [String] = []
        var values: [Float] = []
        var dimension: Int?
        var lineNumber = 0
        // Split on bytes: in `String`, "\r\n" is one `Character` and would not match "\n".
        for rawLine in csv.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Substring(rawLine.last == UInt8(ascii: "\r") ? rawLine.dropLast() : rawLine)
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            let label = Self.trimmed(fields[0])
            guard !label.isEmpty else { throw .malformedLine(lineNumber, .missingLabel) }
            let featureCount = fields.count - 1
            guard featureCount > 0 else { throw .malformedLine(lineNumber, .noFeatures) }
            if let expected = dimension, expected != featureCount {
                throw .malformedLine(lineNumber, .wrongFeatureCount(expected: expected, found: featureCount))
            }
            dimension = featureCount
            for column in 2...fields.count {
                guard let value = Float(Self.trimmed(fields[column - 1])) else {
                    throw .malformedLine(lineNumber, .notANumber(column: column))
                }
                guard value.isFinite else { throw .malformedLine(lineNumber, .notFinite(column: column)) }
                values.append(value)
            }
            labels.append(String(label))
        }
        guard let dimension else { throw .noSamples }
        self.dimension = dimension
        self.labels = labels
        storage = values
    }

    /// Reads and parses a CSV file.
    ///
    /// - Throws: ``LabelledEmbeddingsError/unreadableFile(path:)``, or what ``init(csv:)`` throws.
    public init(contentsOfFile path: String) throws(LabelledEmbeddingsError) {
        guard let data = FileManager.default.contents(atPath: path) else { throw .unreadableFile(path: path) }
        try self.init(csv: String(decoding: data, as: UTF8.self))
    }

    /// The values of sample `index`.
    public func values(at index: Int) -> ArraySlice<Float> {
        storage[(index * dimension)..<((index + 1) * dimension)]
    }

    /// Sample `index` as a validated, normalised ``FeatureVector``.
    ///
    /// - Throws: what ``FeatureVector/init(_:)`` throws (unsupported dimension, non-finite values,
    ///   zero norm).
    public func featureVector(at index: Int) throws(FeatureVectorError) -> FeatureVector {
        try FeatureVector(Array(values(at: index)))
    }

    /// The samples in the CSV format, each value in the shortest form that reads back exactly.
    public func csv() -> String {
        var text = ""
        text.reserveCapacity(count * (dimension * 12 + 16))
        for (index, label) in labels.enumerated() {
            text += label
            for value in values(at: index) {
                text += ","
                text += value.description
            }
            text += "\n"
        }
        return text
    }

    private static func trimmed(_ field: Substring) -> Substring {
        var field = field
        while let first = field.first, first == " " || first == "\t" { field.removeFirst() }
        while let last = field.last, last == " " || last == "\t" { field.removeLast() }
        return field
    }

    private static func isWritable(_ label: String) -> Bool {
        !label.isEmpty && Self.trimmed(Substring(label)).count == label.count
            && !label.contains(where: { $0 == "," || $0.isNewline })
    }
}

/// Why an embeddings file could not be read. Descriptions give line and column numbers, never
/// the values on the line.
public enum LabelledEmbeddingsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong with one line.
    public enum Problem: Sendable, Equatable {
        /// The first field is empty.
        case missingLabel
        /// The line holds a label and nothing else.
        case noFeatures
        /// The line has a different number of values from the first sample.
        case wrongFeatureCount(expected: Int, found: Int)
        /// This column (the label is column 1) is not a decimal number.
        case notANumber(column: Int)
        /// This column is NaN, infinite, or too large for a `Float`.
        case notFinite(column: Int)
    }

    /// The text holds no samples.
    case noSamples
    /// The file could not be read.
    case unreadableFile(path: String)
    /// The line (counting from 1) is malformed.
    case malformedLine(Int, Problem)

    public var description: String {
        switch self {
        case .noSamples:
            return "the embeddings file holds no samples"
        case .unreadableFile(let path):
            return "cannot read the embeddings file \(path)"
        case .malformedLine(let line, let problem):
            let detail = switch problem {
            case .missingLabel: "the label (column 1) is empty"
            case .noFeatures: "there are no values after the label"
            case .wrongFeatureCount(let expected, let found): "\(found) values, but earlier lines have \(expected)"
            case .notANumber(let column): "column \(column) is not a number"
            case .notFinite(let column): "column \(column) is NaN, infinite or out of Float range"
            }
            return "embeddings line \(line): \(detail)"
        }
    }
}

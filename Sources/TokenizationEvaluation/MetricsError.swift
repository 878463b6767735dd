/// Why a set of scores could not be evaluated.
public enum MetricsError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Which scores an error is about.
    public enum Scores: String, Sendable, Equatable {
        case genuine, impostor, mated
        case nonMated = "non-mated"
    }

    /// There are no scores of this kind (for example, every label occurs once).
    case empty(Scores)
    /// The score at `index` of this kind is NaN or infinite.
    case notFinite(Scores, index: Int)
    /// A histogram needs at least one bin.
    case invalidBinCount(Int)

    public var description: String {
        switch self {
        case .empty(let scores): "there are no \(scores.rawValue) scores"
        case .notFinite(let scores, let index): "\(scores.rawValue) score \(index) is NaN or infinite"
        case .invalidBinCount(let count): "a histogram needs at least one bin, not \(count)"
        }
    }

    static func check(_ values: [Double], as scores: Scores) throws(MetricsError) {
        guard !values.isEmpty else { throw .empty(scores) }
        if let index = values.firstIndex(where: { !$0.isFinite }) { throw .notFinite(scores, index: index) }
    }
}

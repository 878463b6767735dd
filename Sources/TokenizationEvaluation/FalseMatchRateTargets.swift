/// The target false-match rates of `custos-bench eval --fmr`, parsed from a comma-separated list
/// such as `1e-4,1e-2`.
public struct FalseMatchRateTargets: Sendable, Hashable {
    /// The rates, in the order given.
    public let rates: [Double]

    /// Why a list of rates was refused.
    public enum ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        /// The list names no rate.
        case empty
        /// An element is not a number.
        case notANumber(String)
        /// A rate outside 0 < rate < 1.
        case outOfRange(Double)

        public var description: String {
            switch self {
            case .empty: "--fmr: name at least one false-match rate, e.g. 1e-4,1e-2"
            case .notANumber(let text): "--fmr: '\(text)' is not a number"
            case .outOfRange(let rate): "--fmr: \(rate) is not a rate between 0 and 1 (exclusive)"
            }
        }
    }

    /// Parses `1e-4,1e-2`; spaces around elements are ignored.
    /// - Throws: ``ParseError`` naming the first bad element.
    public init(parsing text: String) throws(ParseError) {
        guard !text.allSatisfy(\.isWhitespace) else { throw .empty }
        var rates: [Double] = []
        for element in text.split(separator: ",", omittingEmptySubsequences: false) {
            var field = element
            while field.first?.isWhitespace == true { field.removeFirst() }
            while field.last?.isWhitespace == true { field.removeLast() }
            guard let rate = Double(field), rate.isFinite else { throw .notANumber(String(field)) }
            guard rate > 0, rate < 1 else { throw .outOfRange(rate) }
            rates.append(rate)
        }
        self.rates = rates
    }
}

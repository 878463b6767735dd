/// Why Index-of-Max hashing could not be set up or applied.
public enum IndexOfMaxHashingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The seed had this many bytes; it must have 32 (an HMAC-SHA256 output).
    case wrongSeedLength(Int)
    /// Hashing was asked for this dimension; Custos supports 128, 256, 512 and 1,024.
    case unsupportedDimension(Int)
    /// The embedding's dimension differs from the one the hashing was built for.
    case dimensionMismatch(expected: Int, actual: Int)

    public var description: String {
        switch self {
        case .wrongSeedLength(let count):
            "a projection seed has 32 bytes, not \(count)"
        case .unsupportedDimension(let dimension):
            "Index-of-Max hashing supports 128, 256, 512 or 1024 dimensions, not \(dimension)"
        case .dimensionMismatch(let expected, let actual):
            "the embedding has \(actual) values but this projection expects \(expected)"
        }
    }
}

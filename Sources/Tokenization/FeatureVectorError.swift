/// Why an embedding was refused. The descriptions name positions and counts, never values.
public enum FeatureVectorError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The embedding had this many values; Custos accepts 128, 256, 512 or 1,024.
    case wrongDimension(Int)
    /// The value at `index` (counting from 0) is NaN or infinite; later values were not checked.
    case notFinite(index: Int)
    /// Every value is zero, so the embedding has no direction.
    case zeroNorm

    public var description: String {
        switch self {
        case .wrongDimension(let count):
            "an embedding has 128, 256, 512 or 1024 values, not \(count)"
        case .notFinite(let index):
            "embedding value \(index) (counting from 0) is NaN or infinite"
        case .zeroNorm:
            "the embedding is all zeros"
        }
    }
}

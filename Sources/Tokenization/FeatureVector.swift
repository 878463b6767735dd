import SecureMemory

/// A validated face embedding, scaled to unit length (DESIGN §6 step 1).
///
/// The values live in ``SecretBytes``: locked in memory where the system allows it, wiped when
/// the last copy of the vector is released, and never printed (``description`` is redacted).
/// The caller's `[Float]` cannot be wiped from here: drop it as soon as the vector exists.
public struct FeatureVector: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The embedding sizes Custos accepts (face models such as ArcFace give 512).
    public static let supportedDimensions: [Int] = [128, 256, 512, 1024]

    /// The number of values.
    public let dimension: Int

    // Unit-length `Float`s, `dimension` of them.
    private let storage: SecretBytes

    /// Validates `values` and stores them scaled to unit Euclidean length.
    ///
    /// - Throws: ``FeatureVectorError/wrongDimension(_:)`` unless there are 128, 256, 512 or
    ///   1,024 values; ``FeatureVectorError/notFinite(index:)`` for the first NaN or infinity;
    ///   ``FeatureVectorError/zeroNorm`` when every value is zero.
    public init(_ values: [Float]) throws(FeatureVectorError) {
        guard Self.supportedDimensions.contains(values.count) else {
            throw .wrongDimension(values.count)
        }
        // Squares of finite `Float`s summed in `Double` cannot overflow (1,024 × 3.4e38² ≪ 1.8e308)
        // and keep subnormal inputs from rounding to a zero norm.
        var sumOfSquares = 0.0
        for (index, value) in values.enumerated() {
            guard value.isFinite else { throw .notFinite(index: index) }
            sumOfSquares += Double(value) * Double(value)
        }
        guard sumOfSquares > 0 else { throw .zeroNorm }
        let scale = 1 / sumOfSquares.squareRoot()
        dimension = values.count
        storage = SecretBytes(count: values.count * MemoryLayout<Float>.stride) { raw in
            let floats = raw.bindMemory(to: Float.self)
            for index in values.indices {
                floats[index] = Float(Double(values[index]) * scale)
            }
        }
    }

    /// Lends the unit-length values for the duration of `body`. Do not let the buffer escape or
    /// copy the values anywhere that is not wiped.
    public func withUnsafeValues<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            // SAFETY: `init` bound the storage to `Float` and wrote exactly `dimension` values.
            try body(UnsafeBufferPointer(start: raw.baseAddress!.assumingMemoryBound(to: Float.self), count: dimension))
        }
    }

    /// The cosine similarity with `other` (the dot product of the unit vectors), or `nil` when
    /// the dimensions differ. This is the unprotected score that DESIGN §6 measures the tokens
    /// against; the service itself never compares raw features.
    public func cosineSimilarity(to other: FeatureVector) -> Double? {
        guard dimension == other.dimension else { return nil }
        return withUnsafeValues { left in
            other.withUnsafeValues { right in
                Double(Self.dot(left, right))
            }
        }
    }

    /// Eight independent sums: the optimiser turns them into vector lanes, and unlike `SIMD8`
    /// operations they stay fast in debug builds, where evaluations make millions of comparisons.
    private static func dot(_ left: UnsafeBufferPointer<Float>, _ right: UnsafeBufferPointer<Float>) -> Float {
        // SAFETY: both buffers hold `dimension` values, a multiple of 8 for every supported dimension.
        var a = left.baseAddress!, b = right.baseAddress!
        let end = a + left.count
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        var s4: Float = 0, s5: Float = 0, s6: Float = 0, s7: Float = 0
        while a < end {
            s0 += a[0] * b[0]; s1 += a[1] * b[1]; s2 += a[2] * b[2]; s3 += a[3] * b[3]
            s4 += a[4] * b[4]; s5 += a[5] * b[5]; s6 += a[6] * b[6]; s7 += a[7] * b[7]
            a += 8
            b += 8
        }
        return ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))
    }

    public var description: String { "FeatureVector(<redacted>, \(dimension) values)" }
    public var debugDescription: String { description }
}

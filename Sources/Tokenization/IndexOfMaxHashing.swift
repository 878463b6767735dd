public import SecureMemory

/// Keyed Index-of-Max hashing (DESIGN §6 step 2): 1,024 symbols, each the index (0–15) of the
/// largest of 16 random projections of a unit embedding.
///
/// Everything that depends on the seed is computed once, in ``init(seed:dimension:kind:)``; the
/// caller keeps one instance per tenant, key version and dimension. The projection is derived from
/// the seed by ``SeededGenerator`` (HMAC-SHA256 in counter mode) with the label
/// `custos/bio/iom/v1/<kind>/<dimension>`, and is held in wiped storage.
///
/// - Warning: the way the projection is derived is part of the token format: a change here
///   changes every token of every existing key version.
public struct IndexOfMaxHashing: Sendable {
    /// How the 16,384 projections are made.
    public enum ProjectionKind: String, Sendable, Hashable, CaseIterable {
        /// Rounds of random ±1 signs, a fast Walsh–Hadamard transform and a random permutation of
        /// the d outputs, 16,384 / d rounds (32 at d = 512); every supported d is a power of two,
        /// so no padding is needed. Cost O(16,384 · log d) per embedding,
        /// and only sign flips and additions in a fixed order, so symbols are bit-reproducible
        /// on every platform.
        ///
        /// Round `r` (from 0) draws d sign bits (d/32 words; bit b of word w, counting from the
        /// least significant, set means −1 for coordinate 32w + b), then a Fisher–Yates
        /// permutation π of 0..<d (for i from d−1 down to 1, swap i with `uniform(below: i+1)`).
        /// Its symbol k (of d/16) is the index t of the largest output `H·(s ⊙ x)` at π[16k + t];
        /// symbol positions run round by round.
        case structured
        /// A dense 16,384 × d matrix of standard normal entries (Box–Muller, row by row, two
        /// entries per pair of words). Symbol k is the index of the largest of rows 16k…16k+15.
        /// Cost O(16,384 · d) and 64·d KiB of memory (32 MiB at d = 512): kept for comparison.
        case denseGaussian = "dense-gaussian"
    }

    /// The number of symbols per embedding (m).
    public static let symbolCount = 1024
    /// The number of projections each symbol chooses among (q); symbols are in `0..<16`.
    public static let projectionsPerSymbol = 16
    /// m·q: the number of projections.
    public static let projectionCount = symbolCount * projectionsPerSymbol
    /// The number of seed bytes.
    public static let seedByteCount = 32

    /// The embedding dimension this projection accepts.
    public let dimension: Int
    /// How the projection was made.
    public let kind: ProjectionKind

    private let projection: Projection

    /// Derives the projection from `seed`. In a release build this takes about 1.5 ms for
    /// ``ProjectionKind/structured`` and 1.4 s for ``ProjectionKind/denseGaussian`` at d = 512
    /// (a normal value per matrix entry).
    ///
    /// - Parameters:
    ///   - seed: 32 bytes, in production `HMAC_HSM(bio-seed key, tenant ‖ version)`.
    ///   - dimension: 128, 256, 512 or 1,024.
    ///   - kind: ``ProjectionKind/structured`` in production.
    /// - Throws: ``IndexOfMaxHashingError/wrongSeedLength(_:)``,
    ///   ``IndexOfMaxHashingError/unsupportedDimension(_:)``.
    public init(seed: [UInt8], dimension: Int, kind: ProjectionKind) throws(IndexOfMaxHashingError) {
        self = try seed.withUnsafeBytes { raw in
            Result { () throws(IndexOfMaxHashingError) in try Self(seedBytes: raw, dimension: dimension, kind: kind) }
        }.get()
    }

    /// Derives the projection from a seed held in ``SecretBytes``.
    ///
    /// - Throws: ``IndexOfMaxHashingError/wrongSeedLength(_:)``,
    ///   ``IndexOfMaxHashingError/unsupportedDimension(_:)``.
    public init(seed: SecretBytes, dimension: Int, kind: ProjectionKind) throws(IndexOfMaxHashingError) {
        self = try seed.withUnsafeBytes { raw in
            Result { () throws(IndexOfMaxHashingError) in try Self(seedBytes: raw, dimension: dimension, kind: kind) }
        }.get()
    }

    private init(seedBytes: UnsafeRawBufferPointer, dimension: Int, kind: ProjectionKind) throws(IndexOfMaxHashingError) {
        guard seedBytes.count == Self.seedByteCount else { throw .wrongSeedLength(seedBytes.count) }
        guard FeatureVector.supportedDimensions.contains(dimension) else { throw .unsupportedDimension(dimension) }
        var generator = SeededGenerator(seed: seedBytes, label: "custos/bio/iom/v1/\(kind.rawValue)/\(dimension)")
        self.dimension = dimension
        self.kind = kind
        switch kind {
        case .structured:
            projection = .structured(StructuredProjection(dimension: dimension, generator: &generator))
        case .denseGaussian:
            projection = .dense(DenseProjection(dimension: dimension, generator: &generator))
        }
    }

    /// The 1,024 symbols of `vector`, one byte each (values 0–15), in wiped storage: they are as
    /// revealing as the embedding to anyone who knows the seed.
    ///
    /// - Throws: ``IndexOfMaxHashingError/dimensionMismatch(expected:actual:)``.
    public func symbols(for vector: FeatureVector) throws(IndexOfMaxHashingError) -> SecretBytes {
        guard vector.dimension == dimension else {
            throw .dimensionMismatch(expected: dimension, actual: vector.dimension)
        }
        return SecretBytes(count: Self.symbolCount) { raw in
            let output = raw.bindMemory(to: UInt8.self)
            vector.withUnsafeValues { values in
                switch projection {
                case .structured(let structured):
                    structured.symbols(for: values, into: output)
                case .dense(let dense):
                    dense.symbols(for: values, into: output)
                }
            }
        }
    }
}

private enum Projection: Sendable {
    case structured(StructuredProjection)
    case dense(DenseProjection)
}

/// Signs as `Float` ±1 and per-round permutations as `UInt16`, `projectionCount` of each.
private struct StructuredProjection: Sendable {
    let dimension: Int
    let signs: SecretBytes
    let permutations: SecretBytes

    init(dimension: Int, generator: inout SeededGenerator) {
        let count = IndexOfMaxHashing.projectionCount
        var signValues = [Float](repeating: 1, count: count)
        var permutationValues = [UInt16](repeating: 0, count: count)
        for round in 0..<(count / dimension) {
            let base = round * dimension
            for word in 0..<(dimension / 32) {
                let bits = generator.nextUInt32()
                for bit in 0..<32 where bits & (1 << UInt32(bit)) != 0 {
                    signValues[base + word * 32 + bit] = -1
                }
            }
            for index in 0..<dimension { permutationValues[base + index] = UInt16(index) }
            for index in stride(from: dimension - 1, to: 0, by: -1) {
                permutationValues.swapAt(base + index, base + generator.uniform(below: index + 1))
            }
        }
        self.dimension = dimension
        signs = SecretBytes(count: count * 4) { raw in
            _ = raw.initializeMemory(as: Float.self, from: signValues)
        }
        permutations = SecretBytes(count: count * 2) { raw in
            _ = raw.initializeMemory(as: UInt16.self, from: permutationValues)
        }
        signValues.withUnsafeMutableBytes { wipe($0) }
        permutationValues.withUnsafeMutableBytes { wipe($0) }
    }

    func symbols(for values: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<UInt8>) {
        let dimension = dimension
        let symbolsPerRound = dimension / IndexOfMaxHashing.projectionsPerSymbol
        signs.withUnsafeBytes { signBytes in
            permutations.withUnsafeBytes { permutationBytes in
                // SAFETY: `init` bound both buffers (to `Float` and `UInt16`) and filled all
                // `projectionCount` entries; `values` holds `dimension` floats (checked by the
                // caller) and `scratch` has room for `dimension`.
                let signs = signBytes.baseAddress!.assumingMemoryBound(to: Float.self)
                let order = permutationBytes.baseAddress!.assumingMemoryBound(to: UInt16.self)
                let input = UnsafeRawPointer(values.baseAddress!)
                withUnsafeTemporaryAllocation(of: Float.self, capacity: dimension) { scratchBuffer in
                    let scratch = scratchBuffer.baseAddress!
                    let rawScratch = UnsafeMutableRawPointer(scratch)
                    for round in 0..<(IndexOfMaxHashing.projectionCount / dimension) {
                        let roundSigns = UnsafeRawPointer(signs + round * dimension)
                        var offset = 0
                        while offset < dimension * 4 {
                            let x = input.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                            let s = roundSigns.loadUnaligned(fromByteOffset: offset, as: SIMD8<Float>.self)
                            rawScratch.storeBytes(of: x * s, toByteOffset: offset, as: SIMD8<Float>.self)
                            offset += 32
                        }
                        WalshHadamard.transform(scratch, count: dimension)
                        let roundOrder = order + round * dimension
                        for symbol in 0..<symbolsPerRound {
                            let group = roundOrder + symbol * IndexOfMaxHashing.projectionsPerSymbol
                            output[round * symbolsPerRound + symbol] = argmax16 { scratch[Int(group[$0])] }
                        }
                    }
                    wipe(UnsafeMutableRawBufferPointer(scratchBuffer))
                }
            }
        }
    }
}

/// Row-major `projectionCount × dimension` standard normal `Float`s.
private struct DenseProjection: Sendable {
    let dimension: Int
    let matrix: SecretBytes

    init(dimension: Int, generator: inout SeededGenerator) {
        let count = IndexOfMaxHashing.projectionCount * dimension
        self.dimension = dimension
        matrix = SecretBytes(count: count * 4) { raw in
            let entries = raw.bindMemory(to: Float.self)
            for index in stride(from: 0, to: count, by: 2) {
                let (first, second) = generator.normalPair()
                entries[index] = Float(first)
                entries[index + 1] = Float(second)
            }
        }
    }

    func symbols(for values: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<UInt8>) {
        let dimension = dimension
        matrix.withUnsafeBytes { matrixBytes in
            // SAFETY: the matrix holds `projectionCount × dimension` floats and `values` holds
            // `dimension` (a multiple of 16) floats; every load below stays inside them.
            let rows = UnsafeRawPointer(matrixBytes.baseAddress!)
            let input = UnsafeRawPointer(values.baseAddress!)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: IndexOfMaxHashing.projectionsPerSymbol) { dots in
                for symbol in 0..<IndexOfMaxHashing.symbolCount {
                    for projection in 0..<IndexOfMaxHashing.projectionsPerSymbol {
                        let row = rows + (symbol * IndexOfMaxHashing.projectionsPerSymbol + projection) * dimension * 4
                        var even = SIMD16<Float>(), odd = SIMD16<Float>()
                        var offset = 0
                        while offset < dimension * 4 {
                            even += row.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
                                * input.loadUnaligned(fromByteOffset: offset, as: SIMD16<Float>.self)
                            odd += row.loadUnaligned(fromByteOffset: offset + 64, as: SIMD16<Float>.self)
                                * input.loadUnaligned(fromByteOffset: offset + 64, as: SIMD16<Float>.self)
                            offset += 128
                        }
                        dots[projection] = (even + odd).sum()
                    }
                    output[symbol] = argmax16 { dots[$0] }
                }
                wipe(UnsafeMutableRawBufferPointer(dots))
            }
        }
    }
}

/// The index of the largest of `value(0)…value(15)`; the first on ties.
@inline(__always)
private func argmax16(_ value: (Int) -> Float) -> UInt8 {
    var best = value(0)
    var index: UInt8 = 0
    for candidate in 1..<IndexOfMaxHashing.projectionsPerSymbol {
        let next = value(candidate)
        if next > best {
            best = next
            index = UInt8(candidate)
        }
    }
    return index
}

public import CustosModel
public import SecureMemory

/// Keyed Index-of-Max hashing (DESIGN §6 step 2): m symbols, each the index (below q) of the
/// largest of q random projections of a unit embedding — 4,096 of q = 4 in the quaternary
/// format, 1,024 of q = 16 in the compact and wide ones. Other shapes serve `custos-bench eval`
/// to compare candidate formats.
///
/// Everything that depends on the seed is computed once, in ``init(seed:dimension:kind:shape:)``; the
/// caller keeps one instance per tenant, key version, dimension and shape. The projection is
/// derived from the seed by ``SeededGenerator`` (HMAC-SHA256 in counter mode) with the label
/// `custos/bio/iom/v1/<kind>/<dimension>`, and is held in wiped storage; for one q the first
/// rounds of a longer shape are those of a shorter one (the stream simply goes on).
///
/// - Warning: the way the projection is derived is part of the token format: a change here
///   changes every token of every existing key version.
public struct IndexOfMaxHashing: Sendable {
    /// How the m·q projections are made.
    public enum ProjectionKind: String, Sendable, Hashable, CaseIterable {
        /// Rounds of random ±1 signs, a fast Walsh–Hadamard transform and a random permutation of
        /// the d outputs, m·q / d rounds (32 at d = 512 for 1,024 × 16); every supported d is a
        /// power of two, so no padding is needed. Cost O(m·q · log d) per embedding,
        /// and only sign flips and additions in a fixed order, so symbols are bit-reproducible
        /// on every platform.
        ///
        /// Round `r` (from 0) draws d sign bits (d/32 words; bit b of word w, counting from the
        /// least significant, set means −1 for coordinate 32w + b), then a Fisher–Yates
        /// permutation π of 0..<d (for i from d−1 down to 1, swap i with `uniform(below: i+1)`).
        /// Its symbol k (of d/q) is the index t of the largest output `H·(s ⊙ x)` at π[qk + t];
        /// symbol positions run round by round.
        case structured
        /// A dense m·q × d matrix of standard normal entries (Box–Muller, row by row, two
        /// entries per pair of words). Symbol k is the index of the largest of rows qk…qk+q−1.
        /// Cost O(m·q · d) and 4·m·q·d bytes of memory (32 MiB at d = 512, 1,024 × 16): kept for
        /// comparison.
        case denseGaussian = "dense-gaussian"
    }

    /// The shape of the wide and compact formats: m = 1,024, q = 16 (the bits are the PRF's
    /// business, not the hashing's).
    public static let originalShape = BiometricTokenFormat.compact.shape
    /// The number of seed bytes.
    public static let seedByteCount = 32

    /// The embedding dimension this projection accepts.
    public let dimension: Int
    /// How the projection was made.
    public let kind: ProjectionKind
    /// The number of symbols per embedding (m).
    public let symbolCount: Int
    /// The number of projections each symbol chooses among (q); symbols are in `0..<q`.
    public let projectionsPerSymbol: Int

    private let projection: Projection

    /// Derives the projection from `seed`. In a release build this takes about 1.5 ms for
    /// ``ProjectionKind/structured`` and 1.4 s for ``ProjectionKind/denseGaussian`` at d = 512
    /// (a normal value per matrix entry).
    ///
    /// - Parameters:
    ///   - seed: 32 bytes, in production `HMAC_HSM(bio-seed key, tenant ‖ version)`.
    ///   - dimension: 128, 256, 512 or 1,024.
    ///   - kind: ``ProjectionKind/structured`` in production.
    ///   - shape: m and q (its bits are ignored): the key version's format's.
    /// - Throws: ``IndexOfMaxHashingError/wrongSeedLength(_:)``,
    ///   ``IndexOfMaxHashingError/unsupportedDimension(_:)``.
    public init(seed: [UInt8], dimension: Int, kind: ProjectionKind, shape: BiometricTokenShape = originalShape) throws(IndexOfMaxHashingError) {
        self = try seed.withUnsafeBytes { raw in
            Result { () throws(IndexOfMaxHashingError) in try Self(seedBytes: raw, dimension: dimension, kind: kind, shape: shape) }
        }.get()
    }

    /// Derives the projection from a seed held in ``SecretBytes``.
    ///
    /// - Throws: ``IndexOfMaxHashingError/wrongSeedLength(_:)``,
    ///   ``IndexOfMaxHashingError/unsupportedDimension(_:)``.
    public init(seed: SecretBytes, dimension: Int, kind: ProjectionKind, shape: BiometricTokenShape = originalShape) throws(IndexOfMaxHashingError) {
        self = try seed.withUnsafeBytes { raw in
            Result { () throws(IndexOfMaxHashingError) in try Self(seedBytes: raw, dimension: dimension, kind: kind, shape: shape) }
        }.get()
    }

    private init(seedBytes: UnsafeRawBufferPointer, dimension: Int, kind: ProjectionKind, shape: BiometricTokenShape) throws(IndexOfMaxHashingError) {
        guard seedBytes.count == Self.seedByteCount else { throw .wrongSeedLength(seedBytes.count) }
        guard FeatureVector.supportedDimensions.contains(dimension) else { throw .unsupportedDimension(dimension) }
        var generator = SeededGenerator(seed: seedBytes, label: "custos/bio/iom/v1/\(kind.rawValue)/\(dimension)")
        self.dimension = dimension
        self.kind = kind
        symbolCount = shape.positions
        projectionsPerSymbol = shape.symbolsPerPosition
        switch kind {
        case .structured:
            projection = .structured(StructuredProjection(dimension: dimension, shape: shape, generator: &generator))
        case .denseGaussian:
            projection = .dense(DenseProjection(dimension: dimension, shape: shape, generator: &generator))
        }
    }

    /// The m symbols of `vector`, one byte each (values below q), in wiped storage: they are as
    /// revealing as the embedding to anyone who knows the seed.
    ///
    /// - Throws: ``IndexOfMaxHashingError/dimensionMismatch(expected:actual:)``.
    public func symbols(for vector: FeatureVector) throws(IndexOfMaxHashingError) -> SecretBytes {
        guard vector.dimension == dimension else {
            throw .dimensionMismatch(expected: dimension, actual: vector.dimension)
        }
        return SecretBytes(count: symbolCount) { raw in
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

/// Signs as `Float` ±1 and per-round permutations as `UInt16`, m·q of each.
private struct StructuredProjection: Sendable {
    let dimension: Int
    let shape: BiometricTokenShape
    let signs: SecretBytes
    let permutations: SecretBytes

    init(dimension: Int, shape: BiometricTokenShape, generator: inout SeededGenerator) {
        let count = shape.projectionCount
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
        self.shape = shape
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
        let group = shape.symbolsPerPosition
        let symbolsPerRound = dimension / group
        signs.withUnsafeBytes { signBytes in
            permutations.withUnsafeBytes { permutationBytes in
                // SAFETY: `init` bound both buffers (to `Float` and `UInt16`) and filled all
                // m·q entries; `values` holds `dimension` floats (checked by the
                // caller) and `scratch` has room for `dimension`.
                let signs = signBytes.baseAddress!.assumingMemoryBound(to: Float.self)
                let order = permutationBytes.baseAddress!.assumingMemoryBound(to: UInt16.self)
                let input = UnsafeRawPointer(values.baseAddress!)
                withUnsafeTemporaryAllocation(of: Float.self, capacity: dimension) { scratchBuffer in
                    let scratch = scratchBuffer.baseAddress!
                    let rawScratch = UnsafeMutableRawPointer(scratch)
                    for round in 0..<(shape.projectionCount / dimension) {
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
                            let members = roundOrder + symbol * group
                            output[round * symbolsPerRound + symbol] = argmax(of: group) { scratch[Int(members[$0])] }
                        }
                    }
                    wipe(UnsafeMutableRawBufferPointer(scratchBuffer))
                }
            }
        }
    }
}

/// Row-major `m·q × dimension` standard normal `Float`s.
private struct DenseProjection: Sendable {
    let dimension: Int
    let shape: BiometricTokenShape
    let matrix: SecretBytes

    init(dimension: Int, shape: BiometricTokenShape, generator: inout SeededGenerator) {
        let count = shape.projectionCount * dimension
        self.dimension = dimension
        self.shape = shape
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
            // SAFETY: the matrix holds `m·q × dimension` floats and `values` holds
            // `dimension` (a multiple of 16) floats; every load below stays inside them.
            let rows = UnsafeRawPointer(matrixBytes.baseAddress!)
            let input = UnsafeRawPointer(values.baseAddress!)
            let group = shape.symbolsPerPosition
            withUnsafeTemporaryAllocation(of: Float.self, capacity: group) { dots in
                for symbol in 0..<shape.positions {
                    for projection in 0..<group {
                        let row = rows + (symbol * group + projection) * dimension * 4
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
                    output[symbol] = argmax(of: group) { dots[$0] }
                }
                wipe(UnsafeMutableRawBufferPointer(dots))
            }
        }
    }
}

/// The index of the largest of `value(0)…value(count − 1)`; the first on ties.
@inline(__always)
private func argmax(of count: Int, _ value: (Int) -> Float) -> UInt8 {
    var best = value(0)
    var index: UInt8 = 0
    for candidate in 1..<count {
        let next = value(candidate)
        if next > best {
            best = next
            index = UInt8(candidate)
        }
    }
    return index
}

/// The dimensions of a biometric token (DESIGN §6): m Index-of-Max positions, each the index of
/// the largest of q projections, and b bits kept of each position's PRF output block.
///
/// Every ``BiometricTokenFormat`` has one; `custos-bench eval --positions --bits --symbols`
/// evaluates others through the same pipeline to compare them before a format is made of one.
public struct BiometricTokenShape: Sendable, Hashable, CustomStringConvertible {
    /// m: hash symbols per embedding, one token value each.
    public let positions: Int
    /// q: the projections each symbol chooses among; symbols are in `0..<q`.
    public let symbolsPerPosition: Int
    /// b: bits of each PRF output block kept per position (the top bits of its first four bytes).
    public let bitsPerValue: Int

    /// The largest m: a PRF input block numbers its position in 16 bits.
    public static let maxPositions = 65_536

    /// A shape the pipeline can make, or `nil`:
    /// - q a power of two from 2 to 128, so that every supported dimension (128 to 1,024) splits
    ///   into whole groups of q in the structured projection, and a symbol fits a byte;
    /// - m·q a multiple of 1,024 (whole rounds of the structured projection at every dimension)
    ///   and m at most ``maxPositions``;
    /// - b from 1 to 32 (a block's first four bytes), and m·b a whole number of 64-bit words, so
    ///   packed tokens compare word by word.
    public init?(positions: Int, symbolsPerPosition: Int, bitsPerValue: Int) {
        guard (1...7).contains(symbolsPerPosition.trailingZeroBitCount), symbolsPerPosition.nonzeroBitCount == 1,
            positions > 0, positions <= Self.maxPositions, (positions * symbolsPerPosition) % 1024 == 0,
            (1...32).contains(bitsPerValue), (positions * bitsPerValue) % 64 == 0
        else { return nil }
        self.positions = positions
        self.symbolsPerPosition = symbolsPerPosition
        self.bitsPerValue = bitsPerValue
    }

    /// m·q: the projections per embedding.
    public var projectionCount: Int { positions * symbolsPerPosition }

    /// Stored bytes per token: m·b bits, packed.
    public var byteCount: Int { positions * bitsPerValue / 8 }

    /// The largest value a position can hold.
    public var maxValue: UInt32 { bitsPerValue == 32 ? .max : (1 << UInt32(bitsPerValue)) - 1 }

    /// The probability that two different symbols give equal values at a position (2⁻ᵇ): what a
    /// token adds to a pair's symbol agreement s, whose expected score is s + (1 − s)·2⁻ᵇ.
    public var chanceAgreement: Double { 1 / Double(UInt64(1) << UInt64(bitsPerValue)) }

    /// The expected score of two unrelated faces: symbols agree at 1 position in q, and the
    /// others' values collide at ``chanceAgreement`` (0.066 for compact, 0.44 for quaternary).
    public var unrelatedScore: Double {
        let q = Double(symbolsPerPosition)
        return 1 / q + (1 - 1 / q) * chanceAgreement
    }

    public var description: String { "m = \(positions), q = \(symbolsPerPosition), \(bitsPerValue) bits" }
}

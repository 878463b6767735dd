public import SecureMemory

/// Index-of-Max symbols packed four bits each, for fast unprotected comparisons in evaluation:
/// the score is the fraction of positions with equal symbols, what the token score measures
/// after the PRF (the PRF is a bijection per position, so equal symbols ⇔ equal token values).
///
/// - Warning: evaluation only: the symbols sit in ordinary memory, and without the PRF they
///   reveal how faces resemble each other to anyone holding them.
public struct PackedSymbols: Sendable, Hashable {
    // 16 symbols per word, symbol 16w + k in bits 4k..<4k+4 of word w.
    private let words: [UInt64]

    /// Packs symbols as ``IndexOfMaxHashing/symbols(for:)`` returns them.
    ///
    /// - Precondition: a multiple of 16 symbols (any shape's m with q = 16), each below 16.
    public init(_ symbols: SecretBytes) {
        self = symbols.withUnsafeBytes { Self($0.bindMemory(to: UInt8.self)) }
    }

    /// Packs plain symbols (tests and tools).
    ///
    /// - Precondition: a multiple of 16 symbols, each below 16.
    public init(_ symbols: [UInt8]) {
        self = symbols.withUnsafeBufferPointer { Self($0) }
    }

    private init(_ symbols: UnsafeBufferPointer<UInt8>) {
        precondition(symbols.count > 0 && symbols.count % 16 == 0, "a multiple of 16 symbols, not \(symbols.count)")
        var words = [UInt64](repeating: 0, count: symbols.count / 16)
        for (index, symbol) in symbols.enumerated() {
            precondition(symbol < 16, "a symbol is below 16")
            words[index / 16] |= UInt64(symbol) << UInt64(4 * (index % 16))
        }
        self.words = words
    }

    /// The fraction of positions where both hold the same symbol, 0 to 1.
    public func agreement(with other: PackedSymbols) -> Double {
        var differing = 0
        for index in words.indices {
            var bits = words[index] ^ other.words[index]
            bits |= bits >> 1
            bits |= bits >> 2
            differing += (bits & 0x1111_1111_1111_1111).nonzeroBitCount
        }
        let count = words.count * 16
        return Double(count - differing) / Double(count)
    }
}

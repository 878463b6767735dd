/// The Gomez-Barrero et al. (2018) unlinkability metrics ("General Framework to Evaluate
/// Unlinkability in Biometric Template Protection Systems", IEEE TIFS 13(6)), re-implemented from
/// their definitions.
///
/// Mated scores compare templates of the same subject made under two different keys; non-mated
/// scores, templates of different subjects under two keys. For a score s, with the likelihood
/// ratio LR(s) = p(s|Hm) / p(s|Hnm) and equal priors (ω = 1):
///
/// - local linkability D↔(s) = max(0, p(Hm|s) − p(Hnm|s)) = max(0, (LR − 1) / (LR + 1));
/// - system linkability D↔sys = ∫ D↔(s) p(s|Hm) ds, from 0 (fully unlinkable: the two
///   distributions coincide) to 1 (fully linkable: they do not overlap).
///
/// The densities are estimated by histograms with equal-width bins over a score range; a bin
/// with mated but no non-mated scores has LR = ∞ and D↔ = 1. The estimate is biased upwards by
/// sampling noise when bins hold few scores: use enough comparisons or fewer bins.
public struct Unlinkability: Sendable {
    /// One histogram bin.
    public struct Bin: Sendable, Hashable {
        /// The bin covers `[lowerBound, upperBound)` (the last bin includes its upper bound).
        public let lowerBound: Double
        /// See ``lowerBound``.
        public let upperBound: Double
        /// The fraction of mated scores in the bin: p(s|Hm) integrated over the bin.
        public let matedFraction: Double
        /// The fraction of non-mated scores in the bin.
        public let nonMatedFraction: Double
        /// D↔(s) for scores in the bin.
        public let localLinkability: Double
    }

    /// D↔sys.
    public let systemLinkability: Double
    /// The histogram and local linkability, lowest scores first.
    public let bins: [Bin]

    /// Estimates D↔(s) and D↔sys.
    ///
    /// - Parameters:
    ///   - binCount: the number of equal-width bins.
    ///   - range: the score range the bins cover; scores outside it count in the first or last
    ///     bin. By default the smallest to the largest score of both sets.
    /// - Throws: ``MetricsError/empty(_:)``, ``MetricsError/notFinite(_:index:)``,
    ///   ``MetricsError/invalidBinCount(_:)``.
    public init(mated: [Double], nonMated: [Double], binCount: Int = 100, range: ClosedRange<Double>? = nil) throws(MetricsError) {
        try MetricsError.check(mated, as: .mated)
        try MetricsError.check(nonMated, as: .nonMated)
        guard binCount > 0 else { throw .invalidBinCount(binCount) }
        let range = range ?? min(mated.min()!, nonMated.min()!)...max(mated.max()!, nonMated.max()!)
        let width = (range.upperBound - range.lowerBound) / Double(binCount)
        func bin(_ score: Double) -> Int {
            guard width > 0 else { return 0 }
            return min(binCount - 1, max(0, Int(((score - range.lowerBound) / width).rounded(.down))))
        }
        var matedCounts = [Int](repeating: 0, count: binCount)
        var nonMatedCounts = [Int](repeating: 0, count: binCount)
        for score in mated { matedCounts[bin(score)] += 1 }
        for score in nonMated { nonMatedCounts[bin(score)] += 1 }
        var system = 0.0
        var bins: [Bin] = []
        bins.reserveCapacity(binCount)
        for index in 0..<binCount {
            let matedFraction = Double(matedCounts[index]) / Double(mated.count)
            let nonMatedFraction = Double(nonMatedCounts[index]) / Double(nonMated.count)
            let local: Double
            if matedFraction == 0 {
                local = 0
            } else if nonMatedFraction == 0 {
                local = 1
            } else {
                let ratio = matedFraction / nonMatedFraction
                local = max(0, (ratio - 1) / (ratio + 1))
            }
            system += matedFraction * local
            bins.append(Bin(
                lowerBound: range.lowerBound + Double(index) * width,
                upperBound: index == binCount - 1 ? range.upperBound : range.lowerBound + Double(index + 1) * width,
                matedFraction: matedFraction,
                nonMatedFraction: nonMatedFraction,
                localLinkability: local
            ))
        }
        systemLinkability = system
        self.bins = bins
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// ISO/IEC 19795-1 style verification accuracy from genuine and impostor comparison scores
/// (higher = more similar).
///
/// Conventions, used throughout:
/// - a comparison is accepted at threshold t when `score ≥ t`;
/// - FMR(t) = impostor scores ≥ t / impostor count; FNMR(t) = genuine scores < t / genuine count;
/// - the candidate thresholds are the distinct scores of both sets and +∞ (FMR 0, FNMR 1).
///   Between two neighbouring candidates nothing changes, so these are all operating points.
public struct VerificationMetrics: Sendable {
    /// FMR and FNMR at one threshold.
    public struct OperatingPoint: Sendable, Hashable {
        /// Accept when `score ≥ threshold` (+∞: accept nothing).
        public let threshold: Double
        /// The fraction of impostor scores accepted.
        public let falseMatchRate: Double
        /// The fraction of genuine scores rejected.
        public let falseNonMatchRate: Double

        /// A point as given (tests and plots); ``VerificationMetrics`` computes its own.
        public init(threshold: Double, falseMatchRate: Double, falseNonMatchRate: Double) {
            self.threshold = threshold
            self.falseMatchRate = falseMatchRate
            self.falseNonMatchRate = falseNonMatchRate
        }
    }

    /// The equal error rate and where it lies.
    public struct EqualErrorRate: Sendable, Hashable {
        /// Where FMR = FNMR on the straight line between the last operating point with
        /// FMR > FNMR and the first with FMR ≤ FNMR (exact when some point has FMR = FNMR).
        public let rate: Double
        /// The lowest candidate threshold at which FNMR ≥ FMR.
        public let threshold: Double

        /// An EER as given (tests and reports).
        public init(rate: Double, threshold: Double) {
            self.rate = rate
            self.threshold = threshold
        }
    }

    /// The number of genuine (mated) comparisons.
    public var genuineCount: Int { genuine.count }
    /// The number of impostor (non-mated) comparisons.
    public var impostorCount: Int { impostor.count }
    /// The equal error rate.
    public let equalErrorRate: EqualErrorRate

    // Both ascending.
    private let genuine: [Double]
    private let impostor: [Double]

    /// Sorts the scores and computes the EER.
    ///
    /// - Throws: ``MetricsError/empty(_:)`` when either set is empty,
    ///   ``MetricsError/notFinite(_:index:)`` for a NaN or infinite score.
    public init(genuine: [Double], impostor: [Double]) throws(MetricsError) {
        try MetricsError.check(genuine, as: .genuine)
        try MetricsError.check(impostor, as: .impostor)
        self.genuine = genuine.sorted()
        self.impostor = impostor.sorted()
        var previous: OperatingPoint?
        var result: EqualErrorRate?
        Self.walk(self.genuine, self.impostor) { point in
            let difference = point.falseMatchRate - point.falseNonMatchRate
            guard difference <= 0 else {
                previous = point
                return true
            }
            if difference == 0 || previous == nil {
                result = EqualErrorRate(rate: point.falseNonMatchRate, threshold: point.threshold)
            } else if let previous {
                let before = previous.falseMatchRate - previous.falseNonMatchRate
                let fraction = before / (before - difference)
                let rate = previous.falseMatchRate + fraction * (point.falseMatchRate - previous.falseMatchRate)
                result = EqualErrorRate(rate: rate, threshold: point.threshold)
            }
            return false
        }
        // The walk ends at +∞ (FMR 0, FNMR 1), where FNMR ≥ FMR, so `result` is always set.
        equalErrorRate = result!
    }

    /// FMR and FNMR when accepting scores ≥ `threshold`.
    public func operatingPoint(atThreshold threshold: Double) -> OperatingPoint {
        OperatingPoint(
            threshold: threshold,
            falseMatchRate: Double(impostor.count - Self.countBelow(threshold, in: impostor)) / Double(impostor.count),
            falseNonMatchRate: Double(Self.countBelow(threshold, in: genuine)) / Double(genuine.count)
        )
    }

    /// The FNMR at the lowest threshold whose FMR does not exceed `targetFalseMatchRate`.
    ///
    /// With N impostor scores at most k = ⌊target·N⌋ of them may be accepted. If v is the
    /// (k+1)-th highest impostor score, the operating point accepts exactly the scores above v
    /// (its threshold is the smallest score above v, or +∞); ties at v are all rejected, so the
    /// reported FMR may be below the target. No interpolation: this is a point the system can run
    /// at. Below 1/N the answer is the point accepting no impostor at all.
    public func falseNonMatchRate(atFalseMatchRate targetFalseMatchRate: Double) -> OperatingPoint {
        let allowed = Int((targetFalseMatchRate * Double(impostor.count) * (1 + 1e-12)).rounded(.down))
        guard allowed < impostor.count else {
            return operatingPoint(atThreshold: min(genuine[0], impostor[0]))
        }
        let cut = impostor[impostor.count - 1 - max(allowed, 0)]
        let genuineAtOrBelow = Self.countAtOrBelow(cut, in: genuine)
        let impostorAtOrBelow = Self.countAtOrBelow(cut, in: impostor)
        let threshold = min(
            genuineAtOrBelow < genuine.count ? genuine[genuineAtOrBelow] : .infinity,
            impostorAtOrBelow < impostor.count ? impostor[impostorAtOrBelow] : .infinity
        )
        return operatingPoint(atThreshold: threshold)
    }

    /// Operating points for a DET plot, by increasing threshold (FMR falling, FNMR rising), from
    /// the lowest score (FMR 1) to +∞ (FNMR 1).
    ///
    /// All points when there are at most `maxPoints`; otherwise the first and last and each point
    /// that moves far enough from the last one kept on log₁₀ axes (rates floored at half of one
    /// comparison), so the low-rate ends a DET plot stretches out keep their detail.
    public func detCurve(maxPoints: Int = 1000) -> [OperatingPoint] {
        var points: [OperatingPoint] = []
        Self.walk(genuine, impostor) { points.append($0); return true }
        guard points.count > maxPoints, maxPoints >= 2 else { return points }
        let floorFMR = 0.5 / Double(impostor.count), floorFNMR = 0.5 / Double(genuine.count)
        func logs(_ point: OperatingPoint) -> (Double, Double) {
            (log10(max(point.falseMatchRate, floorFMR)), log10(max(point.falseNonMatchRate, floorFNMR)))
        }
        let span = -log10(floorFMR) - log10(floorFNMR)
        let step = span / Double(maxPoints - 2)
        var kept = [points[0]]
        var last = logs(points[0])
        for point in points.dropFirst().dropLast() {
            let current = logs(point)
            if max(abs(current.0 - last.0), abs(current.1 - last.1)) >= step {
                kept.append(point)
                last = current
            }
        }
        kept.append(points[points.count - 1])
        return kept
    }

    /// Calls `visit` with the operating point of every candidate threshold, lowest first, until
    /// it returns false.
    private static func walk(_ genuine: [Double], _ impostor: [Double], _ visit: (OperatingPoint) -> Bool) {
        let genuineCount = Double(genuine.count), impostorCount = Double(impostor.count)
        var g = 0, i = 0
        while g < genuine.count || i < impostor.count {
            let threshold = min(g < genuine.count ? genuine[g] : .infinity, i < impostor.count ? impostor[i] : .infinity)
            let point = OperatingPoint(
                threshold: threshold,
                falseMatchRate: Double(impostor.count - i) / impostorCount,
                falseNonMatchRate: Double(g) / genuineCount
            )
            guard visit(point) else { return }
            while g < genuine.count && genuine[g] == threshold { g += 1 }
            while i < impostor.count && impostor[i] == threshold { i += 1 }
        }
        _ = visit(OperatingPoint(threshold: .infinity, falseMatchRate: 0, falseNonMatchRate: 1))
    }

    /// The number of values below `value` in ascending `sorted`.
    private static func countBelow(_ value: Double, in sorted: [Double]) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] < value { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// The number of values at or below `value` in ascending `sorted`.
    private static func countAtOrBelow(_ value: Double, in sorted: [Double]) -> Int {
        var low = 0, high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] <= value { low = middle + 1 } else { high = middle }
        }
        return low
    }
}

/// The decision threshold for a target false-match rate, read off a labelled set's scores, and
/// what it costs genuine users there: how a tenant calibrates GREEN and AMBER on its own data
/// (docs/tokenization.md, "Decision thresholds").
///
/// JSON field names are those `custos-bench eval --output json` prints; rates are fractions.
public struct CalibratedThreshold: Sendable, Hashable, Codable {
    /// The false-match rate asked for.
    public let target_fmr: Double
    /// Accept scores at or above this; `nil` when only accepting nothing keeps FMR ≤ target
    /// (every genuine score is at or below an impostor score the target does not allow).
    public let threshold: Double?
    /// The FMR the set shows at `threshold` (≤ target; below it when impostor scores tie).
    public let fmr: Double
    /// The fraction of genuine comparisons below `threshold`.
    public let fnmr: Double
    /// Impostor comparisons at or above `threshold`.
    public let impostors_accepted: Int
    /// The impostor comparisons the set holds.
    public let impostor_comparisons: Int
    /// Whether the set holds at least ``impostorsNeeded(for:)`` impostor comparisons, so the
    /// threshold rests on about 30 accepted impostors rather than a handful.
    public let enough_impostors: Bool

    /// Reads the threshold off `metrics` (``VerificationMetrics/falseNonMatchRate(atFalseMatchRate:)``:
    /// the lowest threshold whose FMR does not exceed the target, no interpolation).
    public init(targetFalseMatchRate: Double, metrics: VerificationMetrics) {
        let point = metrics.falseNonMatchRate(atFalseMatchRate: targetFalseMatchRate)
        target_fmr = targetFalseMatchRate
        threshold = point.threshold.isFinite ? point.threshold : nil
        fmr = point.falseMatchRate
        fnmr = point.falseNonMatchRate
        impostors_accepted = Int((point.falseMatchRate * Double(metrics.impostorCount)).rounded())
        impostor_comparisons = metrics.impostorCount
        enough_impostors = Double(metrics.impostorCount) >= Self.impostorsNeeded(for: targetFalseMatchRate)
    }

    /// Doddington's rule of 30: about 30 errors give a rate within ±30 % at 90 % confidence, so
    /// an FMR target needs 30 / target impostor comparisons (300,000 for 1e-4) — and from many
    /// identities, since comparisons of the same two people are far from independent.
    public static func impostorsNeeded(for targetFalseMatchRate: Double) -> Double {
        30 / targetFalseMatchRate
    }

    /// The FMRs the default GREEN and AMBER thresholds are derived at.
    public static let defaultTargets: [Double] = [1e-4, 1e-2]
}

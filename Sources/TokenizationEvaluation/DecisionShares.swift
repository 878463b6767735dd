/// How genuine and impostor comparisons of a set fall into GREEN, AMBER and RED under given
/// thresholds (score ≥ green: GREEN; ≥ amber: AMBER; below: RED). Fractions, summing to 1 per kind.
///
/// JSON field names are those `custos-bench eval --output json` prints.
public struct DecisionShares: Sendable, Hashable, Codable {
    public let green_threshold: Double
    public let amber_threshold: Double
    public let genuine_green: Double
    public let genuine_amber: Double
    public let genuine_red: Double
    public let impostor_green: Double
    public let impostor_amber: Double
    public let impostor_red: Double

    /// - Precondition: `amber ≤ green`.
    public init(green: Double, amber: Double, metrics: VerificationMetrics) {
        precondition(amber <= green, "amber is at most green")
        let atGreen = metrics.operatingPoint(atThreshold: green), atAmber = metrics.operatingPoint(atThreshold: amber)
        green_threshold = green
        amber_threshold = amber
        genuine_green = 1 - atGreen.falseNonMatchRate
        genuine_red = atAmber.falseNonMatchRate
        genuine_amber = atGreen.falseNonMatchRate - atAmber.falseNonMatchRate
        impostor_green = atGreen.falseMatchRate
        impostor_amber = atAmber.falseMatchRate - atGreen.falseMatchRate
        impostor_red = 1 - atAmber.falseMatchRate
    }
}

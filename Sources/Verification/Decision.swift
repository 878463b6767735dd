/// The outcome of a verification: "flag, never reject" (DESIGN §2.6). `red` means a person
/// must look, never an automatic refusal.
public enum DecisionColor: String, Sendable, Codable, Hashable {
    case green, amber, red
}

/// A decision and a coarse confidence: callers never get the score or anything per position.
public struct Decision: Sendable, Codable, Hashable {
    public enum Confidence: String, Sendable, Codable, Hashable {
        case low, medium, high
    }

    public let color: DecisionColor
    public let confidence: Confidence

    public init(color: DecisionColor, confidence: Confidence) {
        self.color = color
        self.confidence = confidence
    }
}

/// Per-tenant score thresholds. Scores are matching positions / 1,024: impostors sit near
/// 1/16 (0.0625) and rise with the resemblance of the two faces, genuine comparisons above.
public struct DecisionThresholds: Sendable, Codable, Hashable {
    /// At or above: green.
    public let green: Double
    /// At or above (and below green): amber. Below: red.
    public let amber: Double

    /// The false-match rate the default GREEN threshold is set for: one impostor comparison in
    /// 10,000 reaches GREEN.
    public static let greenFalseMatchRate = 1e-4
    /// The false-match rate the default AMBER threshold is set for: one impostor comparison in
    /// 100 reaches AMBER or GREEN; the rest are RED.
    public static let amberFalseMatchRate = 1e-2

    /// 174 and 141 matching positions of 1,024 (0.170 and 0.138): the scores at
    /// ``greenFalseMatchRate`` and ``amberFalseMatchRate`` of compact tokens (the default
    /// format) on the realistic synthetic profile, whose impostor tail is that of real face
    /// embeddings (docs/tokenization.md, "Decision thresholds"; `RealisticProfileTests`
    /// re-derives them). A compact token's 8-bit values agree by chance at 1 position in 256
    /// where symbols differ, which lifts every score by (1 − s)/256: on wide tokens (32 bits)
    /// the same FMRs sit at 170 and 136, so these defaults are slightly stricter there. They
    /// were 0.30 and 0.15, which left a quarter of genuine LFW faces AMBER. A tenant calibrates
    /// its own with `custos-bench eval --fmr` on its data.
    public static let `default` = DecisionThresholds(unchecked: 174.0 / 1024, amber: 141.0 / 1024)

    /// - Returns: `nil` unless 0 < amber < green ≤ 1.
    public init?(green: Double, amber: Double) {
        guard amber > 0, amber < green, green <= 1 else { return nil }
        self.green = green
        self.amber = amber
    }

    private init(unchecked green: Double, amber: Double) {
        self.green = green
        self.amber = amber
    }

    /// The decision for a comparison score.
    public func decide(score: Double) -> Decision {
        let color: DecisionColor = score >= green ? .green : score >= amber ? .amber : .red
        // Confidence: how far the score is from the nearest boundary, in thirds of the band.
        let distance = min(abs(score - green), abs(score - amber))
        let band = green - amber
        let confidence: Decision.Confidence = distance >= band ? .high : distance >= band / 3 ? .medium : .low
        return Decision(color: color, confidence: confidence)
    }
}

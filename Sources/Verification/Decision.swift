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
/// 1/16 (0.0625), genuine comparisons far above.
public struct DecisionThresholds: Sendable, Codable, Hashable {
    /// At or above: green.
    public let green: Double
    /// At or above (and below green): amber. Below: red.
    public let amber: Double

    /// Defaults from the synthetic evaluation (docs/tokenization.md): impostor scores stay
    /// below 0.12 and genuine ones are mostly above 0.5.
    public static let `default` = DecisionThresholds(unchecked: 0.30, amber: 0.15)

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

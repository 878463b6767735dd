public import CustosModel

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

/// Score thresholds of one token format. Scores are matching positions / m: impostors sit near
/// the format's chance agreement — 1/16 (0.0625) for the 1,024 × 16 formats, 1/4 + 3/4 · 1/4 ≈
/// 0.44 for the quaternary one (a quarter of different symbols collide in 2 bits) — and rise
/// with the resemblance of the two faces, genuine comparisons above. So one pair of fractions
/// cannot serve two formats: each format has its own defaults, derived from the same FMRs.
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

    /// The scores at ``greenFalseMatchRate`` and ``amberFalseMatchRate`` of `format`'s tokens
    /// on the realistic synthetic profile, whose impostor tail is that of real face embeddings
    /// (docs/tokenization.md, "Decision thresholds"; `RealisticProfileTests` re-derives them):
    /// - compact and wide: 174 and 141 matching positions of 1,024 (0.170 and 0.138), derived
    ///   on compact tokens, whose 8-bit values agree by chance at 1 position in 256 where symbols
    ///   differ (every score lifted by (1 − s)/256); on wide tokens the same FMRs sit at 170 and
    ///   136, so these are slightly stricter there. They were 0.30 and 0.15, which left a
    ///   quarter of genuine LFW faces AMBER.
    /// - quaternary: ``quaternaryDefault``.
    ///
    /// A tenant calibrates its own with `custos-bench eval --fmr` on its data.
    public static func `default`(for format: BiometricTokenFormat) -> DecisionThresholds {
        switch format {
        case .wide, .compact: sixteenSymbolDefault
        case .quaternary: quaternaryDefault
        }
    }

    /// 174 and 141 of 1,024 positions: the 1,024 × 16 formats' defaults.
    static let sixteenSymbolDefault = DecisionThresholds(unchecked: 174.0 / 1024, amber: 141.0 / 1024)

    /// 2,203 and 2,096 matching positions of 4,096 (0.538 and 0.512): the quaternary format's
    /// defaults, the highest of three derivations (2,200–2,203 and 2,094–2,096) with different
    /// random functions in place of the PRF. Scores are symbol agreement s plus the collisions
    /// of different symbols in 2 bits, s + (1 − s)/4 on average, with noise that widens the
    /// impostor tail; both are in the derivation, which scores real 2-bit values.
    static let quaternaryDefault = DecisionThresholds(unchecked: 2203.0 / 4096, amber: 2096.0 / 4096)

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

    /// Where `score` lies between the bands, on a scale shared by every format: 0 at ``amber``, 1
    /// at ``green`` (below 0: RED). Ranks candidates of two formats (a rotation's overlap) by
    /// how far each is into its own format's bands, since their raw scores do not compare.
    public func bandPosition(of score: Double) -> Double {
        (score - amber) / (green - amber)
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

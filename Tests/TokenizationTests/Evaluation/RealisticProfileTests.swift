import Testing
import Tokenization
import TokenizationEvaluation
import Verification

/// The realistic synthetic profile shows the score tails measured on real face embeddings
/// (InsightFace on LFW, 474 genuine and 474 impostor verifications: 23 % of genuine scores below
/// 0.30 and 0.8 % below 0.15, one impostor of 474 at or above 0.15), and the default decision
/// thresholds are the ones its score distributions give for FMR 1e-4 (GREEN) and 1e-2 (AMBER).
@Suite("Realistic synthetic profile and the default decision thresholds")
struct RealisticProfileTests {
    /// Protected scores (symbol agreement, what the token score measures) of every pair.
    static func protectedScores(_ set: LabelledEmbeddings) throws -> ScorePairs {
        let hashing = try IndexOfMaxHashing(seed: seed(42), dimension: set.dimension, kind: .structured)
        let symbols = try (0..<set.count).map { PackedSymbols(try hashing.symbols(for: try set.featureVector(at: $0))) }
        return ScorePairs(labels: set.labels) { symbols[$0].agreement(with: symbols[$1]) }
    }

    static func fraction(_ scores: [Double], _ included: (Double) -> Bool) -> Double {
        Double(scores.count(where: included)) / Double(scores.count)
    }

    /// The bands are the 95 % (Clopper–Pearson) intervals of the LFW measurement itself:
    /// 109 of 474 genuine below 0.30, 4 of 474 below 0.15, 1 of 474 impostors at or above 0.15.
    @Test("Genuine tail like LFW's: 19–27 % of genuine scores below 0.30, 0.2–2.2 % below 0.15")
    func genuineTail() throws {
        let set = SyntheticEmbeddings(configuration: .realistic(identities: 150, samplesPerIdentity: 8, seed: 1)).embeddings
        let pairs = try Self.protectedScores(set)
        let belowOldGreen = Self.fraction(pairs.genuine) { $0 < 0.30 }
        let belowOldAmber = Self.fraction(pairs.genuine) { $0 < 0.15 }
        let impostorsAmberOrAbove = Self.fraction(pairs.impostor) { $0 >= 0.15 }
        #expect((0.19...0.27).contains(belowOldGreen), "genuine below 0.30: \(belowOldGreen)")
        #expect((0.002...0.022).contains(belowOldAmber), "genuine below 0.15: \(belowOldAmber)")
        #expect((0.00005...0.012).contains(impostorsAmberOrAbove), "impostors at or above 0.15: \(impostorsAmberOrAbove)")
        // The standard profile's impostors never get there: its tail is narrower than real faces'.
        let standard = try Self.protectedScores(SyntheticEmbeddings(configuration: .init(identities: 150, samplesPerIdentity: 8, seed: 1)).embeddings)
        #expect(Self.fraction(standard.impostor) { $0 >= 0.15 } < impostorsAmberOrAbove)
    }

    @Test("Impostor cosines have a slightly positive mean and a wider spread than random directions")
    func impostorCosines() throws {
        let set = SyntheticEmbeddings(configuration: .realistic(identities: 120, samplesPerIdentity: 2, seed: 2)).embeddings
        let vectors = try (0..<set.count).map { try set.featureVector(at: $0) }
        let impostor = ScorePairs(labels: set.labels) { vectors[$0].cosineSimilarity(to: vectors[$1])! }.impostor
        let mean = impostor.reduce(0, +) / Double(impostor.count)
        let deviation = (impostor.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(impostor.count)).squareRoot()
        #expect((0.015...0.05).contains(mean), "impostor cosine mean \(mean)")
        // Random directions at d = 512 give 1/√512 = 0.044.
        #expect((0.06...0.095).contains(deviation), "impostor cosine deviation \(deviation)")
    }

    /// 1,500 identities × 2 samples: 4.5 million impostor pairs from 1.1 million pairs of
    /// identities, so FMR 1e-4 rests on about 450 accepted impostors (the rule of 30 asks for 30).
    @Test("The default thresholds are the realistic profile's scores at FMR 1e-4 (GREEN) and 1e-2 (AMBER)")
    func defaultsAreDerived() throws {
        let set = SyntheticEmbeddings(configuration: .realistic(identities: 1_500, samplesPerIdentity: 2, seed: 3)).embeddings
        let pairs = try Self.protectedScores(set)
        let metrics = try VerificationMetrics(genuine: pairs.genuine, impostor: pairs.impostor)
        let green = CalibratedThreshold(targetFalseMatchRate: DecisionThresholds.greenFalseMatchRate, metrics: metrics)
        let amber = CalibratedThreshold(targetFalseMatchRate: DecisionThresholds.amberFalseMatchRate, metrics: metrics)
        print("realistic 1500×2 seed 3: GREEN at FMR \(green.target_fmr): \(green.threshold ?? .infinity) (FNMR \(green.fnmr)); AMBER at FMR \(amber.target_fmr): \(amber.threshold ?? .infinity) (FNMR \(amber.fnmr))")
        #expect(green.enough_impostors && amber.enough_impostors)
        let defaults = DecisionThresholds.default
        // The defaults are for compact tokens, whose 8-bit values also agree by chance at 1 in 256
        // of the positions where symbols differ: symbol agreement s reads as s + (1 − s)/256.
        // Within 3 positions of 1,024 (the seeds measured through the HSM differ by one).
        let compact = { (s: Double) in s + (1 - s) / 256 }
        #expect(abs(compact(green.threshold ?? .infinity) - defaults.green) <= 0.003, "GREEN at FMR 1e-4 here: \(green.threshold ?? .infinity)")
        #expect(abs(compact(amber.threshold ?? .infinity) - defaults.amber) <= 0.003, "AMBER at FMR 1e-2 here: \(amber.threshold ?? .infinity)")
        // And the defaults keep their FMRs on this set, within the sampling error of a few dozen
        // accepted impostors.
        #expect(metrics.operatingPoint(atThreshold: defaults.green).falseMatchRate <= 2 * DecisionThresholds.greenFalseMatchRate)
        #expect(metrics.operatingPoint(atThreshold: defaults.amber).falseMatchRate <= 2 * DecisionThresholds.amberFalseMatchRate)
    }
}

import CustosModel
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

    /// Quaternary token scores of every pair: the symbols of the 4,096 × 4 shape, each
    /// position's value a fixed random 2-bit function of (position, symbol) — a random function
    /// in place of the PRF (`codebook` seeds it), so the collisions of different symbols (1 in 4)
    /// and their noise are in the scores, as they are in real tokens.
    static func quaternaryScores(_ set: LabelledEmbeddings, codebook codebookSeed: UInt64 = 43) throws -> ScorePairs {
        let shape = BiometricTokenFormat.quaternary.shape
        let hashing = try IndexOfMaxHashing(seed: seed(42), dimension: set.dimension, kind: .structured, shape: shape)
        var random = TestRandom(seed: codebookSeed)
        let codebook = (0..<shape.projectionCount).map { _ in UInt64.random(in: 0...3, using: &random) }
        let tokens: [[UInt64]] = try (0..<set.count).map { index in
            try hashing.symbols(for: try set.featureVector(at: index)).withUnsafeBytes { symbols in
                var words = [UInt64](repeating: 0, count: shape.positions / 32)
                for position in 0..<shape.positions {
                    words[position / 32] |= codebook[position * 4 + Int(symbols[position])] << UInt64(2 * (position % 32))
                }
                return words
            }
        }
        return ScorePairs(labels: set.labels) { first, second in
            tokens[first].withUnsafeBufferPointer { a in
                tokens[second].withUnsafeBufferPointer { b in
                    var equal = 0
                    for word in 0..<a.count {
                        let x = a[word] ^ b[word]
                        equal += (~(x | x >> 1) & 0x5555_5555_5555_5555).nonzeroBitCount
                    }
                    return Double(equal) / Double(shape.positions)
                }
            }
        }
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
        let defaults = DecisionThresholds.default(for: .compact)
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

    /// The same set and FMRs as ``defaultsAreDerived()``, on quaternary token scores, with three
    /// random functions in place of the PRF (the defaults take the highest thresholds). Their
    /// impostors centre near 0.44, so these defaults are the compact ones' only in FMR.
    @Test("The quaternary defaults are the realistic profile's quaternary token scores at FMR 1e-4 (GREEN) and 1e-2 (AMBER)", arguments: [43, 44, 45] as [UInt64])
    func quaternaryDefaultsAreDerived(codebook: UInt64) throws {
        let set = SyntheticEmbeddings(configuration: .realistic(identities: 1_500, samplesPerIdentity: 2, seed: 3)).embeddings
        let pairs = try Self.quaternaryScores(set, codebook: codebook)
        let metrics = try VerificationMetrics(genuine: pairs.genuine, impostor: pairs.impostor)
        let green = CalibratedThreshold(targetFalseMatchRate: DecisionThresholds.greenFalseMatchRate, metrics: metrics)
        let amber = CalibratedThreshold(targetFalseMatchRate: DecisionThresholds.amberFalseMatchRate, metrics: metrics)
        print("quaternary, realistic 1500×2 seed 3, codebook \(codebook): GREEN at FMR \(green.target_fmr): \((green.threshold ?? .infinity) * 4096) of 4096 (FNMR \(green.fnmr)); AMBER at FMR \(amber.target_fmr): \((amber.threshold ?? .infinity) * 4096) (FNMR \(amber.fnmr))")
        #expect(green.enough_impostors && amber.enough_impostors)
        let defaults = DecisionThresholds.default(for: .quaternary)
        // Within 8 positions of 4,096 (the three random functions differ by 3).
        #expect(abs((green.threshold ?? .infinity) - defaults.green) <= 8.0 / 4096, "GREEN at FMR 1e-4 here: \(green.threshold ?? .infinity)")
        #expect(abs((amber.threshold ?? .infinity) - defaults.amber) <= 8.0 / 4096, "AMBER at FMR 1e-2 here: \(amber.threshold ?? .infinity)")
        // Far from the compact defaults: one pair of fractions cannot serve both formats.
        #expect(defaults.amber > DecisionThresholds.default(for: .compact).green + 0.3)
        #expect(metrics.operatingPoint(atThreshold: defaults.green).falseMatchRate <= DecisionThresholds.greenFalseMatchRate)
        #expect(metrics.operatingPoint(atThreshold: defaults.amber).falseMatchRate <= DecisionThresholds.amberFalseMatchRate)
    }
}

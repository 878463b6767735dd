import Testing
import Tokenization
import TokenizationEvaluation

@Suite("Accuracy and unlinkability metrics")
struct MetricsTests {
    @Test("EER where an operating point has FMR = FNMR")
    func exactEER() throws {
        let metrics = try VerificationMetrics(genuine: [0.9, 0.8, 0.7, 0.6, 0.3], impostor: [0.1, 0.2, 0.35, 0.4, 0.5])
        #expect(metrics.equalErrorRate.rate == 0.2)
        #expect(metrics.equalErrorRate.threshold == 0.5)
    }

    @Test("EER interpolated between two operating points")
    func interpolatedEER() throws {
        let flat = try VerificationMetrics(genuine: [0.3, 0.8, 0.9], impostor: [0.1, 0.5])
        #expect(abs(flat.equalErrorRate.rate - 1.0 / 3) < 1e-12)
        #expect(flat.equalErrorRate.threshold == 0.8)
        // (FMR 0.4, FNMR 0.1) at 0.5 → (0.1, 0.3) at 0.9: they meet at 0.22.
        let both = try VerificationMetrics(genuine: Self.genuine, impostor: Self.impostor)
        #expect(abs(both.equalErrorRate.rate - 0.22) < 1e-12)
        #expect(both.equalErrorRate.threshold == 0.9)
    }

    static let impostor = [Double](repeating: 0, count: 6) + [0.5, 0.5, 0.5, 0.9]
    static let genuine = [0.2, 0.5, 0.5] + [Double](repeating: 1, count: 7)

    @Test("FNMR at a target FMR: the lowest threshold with FMR ≤ target, ties rejected")
    func fnmrAtFMR() throws {
        let metrics = try VerificationMetrics(genuine: Self.genuine, impostor: Self.impostor)
        let tenth = metrics.falseNonMatchRate(atFalseMatchRate: 0.1)
        #expect(tenth == .init(threshold: 0.9, falseMatchRate: 0.1, falseNonMatchRate: 0.3))
        let tied = metrics.falseNonMatchRate(atFalseMatchRate: 0.35)
        #expect(tied.falseMatchRate == 0.1 && tied.falseNonMatchRate == 0.3)
        let strict = metrics.falseNonMatchRate(atFalseMatchRate: 0.05)
        #expect(strict == .init(threshold: 1, falseMatchRate: 0, falseNonMatchRate: 0.3))
        let loose = metrics.falseNonMatchRate(atFalseMatchRate: 0.4)
        #expect(loose == .init(threshold: 0.2, falseMatchRate: 0.4, falseNonMatchRate: 0))
        #expect(metrics.falseNonMatchRate(atFalseMatchRate: 1).falseNonMatchRate == 0)
    }

    @Test("FNMR at FMR 1e-3 and 1e-4 over 10,000 impostor scores")
    func lowFMR() throws {
        let impostor = (0..<10_000).map { Double($0) / 10_000 }
        let genuine = [0.5, 0.9985, 0.999, 0.9991, 0.99995] + [Double](repeating: 2, count: 95)
        let metrics = try VerificationMetrics(genuine: genuine, impostor: impostor)
        // 1e-3 allows 10 impostors: those above 0.9989.
        let milli = metrics.falseNonMatchRate(atFalseMatchRate: 1e-3)
        #expect(milli.falseMatchRate == 1e-3)
        #expect(milli.falseNonMatchRate == 0.02)
        #expect(milli.threshold == 0.999)
        // 1e-4 allows one: 0.9999.
        let tenth = metrics.falseNonMatchRate(atFalseMatchRate: 1e-4)
        #expect(tenth.falseMatchRate == 1e-4)
        #expect(tenth.falseNonMatchRate == 0.04)
    }

    @Test("The DET curve runs from FMR 1 to FNMR 1, monotone, thinned on log axes")
    func detCurve() throws {
        var random = TestRandom(seed: 1)
        let genuine = (0..<2_000).map { _ in Double(random.normal()) + 3 }
        let impostor = (0..<50_000).map { _ in Double(random.normal()) }
        let metrics = try VerificationMetrics(genuine: genuine, impostor: impostor)
        let all = metrics.detCurve(maxPoints: .max)
        #expect(all.count == Set(genuine + impostor).count + 1)
        let curve = metrics.detCurve(maxPoints: 200)
        #expect(curve.count <= 202 && curve.count > 50)
        #expect(curve.first?.falseMatchRate == 1 && curve.first?.falseNonMatchRate == 0)
        #expect(curve.last == .init(threshold: .infinity, falseMatchRate: 0, falseNonMatchRate: 1))
        for (previous, next) in zip(curve, curve.dropFirst()) {
            #expect(previous.threshold < next.threshold)
            #expect(previous.falseMatchRate >= next.falseMatchRate && previous.falseNonMatchRate <= next.falseNonMatchRate)
        }
        #expect(curve.contains { $0.falseMatchRate > 0 && $0.falseMatchRate < 1e-3 })
        let eer = metrics.equalErrorRate
        #expect(abs(metrics.operatingPoint(atThreshold: eer.threshold).falseNonMatchRate - eer.rate) < 0.01)
    }

    @Test("Empty and non-finite score sets are refused")
    func invalid() {
        #expect(throws: MetricsError.empty(.genuine)) { try VerificationMetrics(genuine: [], impostor: [1]) }
        #expect(throws: MetricsError.notFinite(.impostor, index: 1)) { try VerificationMetrics(genuine: [1], impostor: [0, .nan]) }
        #expect(throws: MetricsError.empty(.nonMated)) { try Unlinkability(mated: [1], nonMated: []) }
        #expect(throws: MetricsError.invalidBinCount(0)) { try Unlinkability(mated: [1], nonMated: [0], binCount: 0) }
    }

    @Test("D↔sys is 1 for separated distributions and 0 for identical ones")
    func unlinkabilityExtremes() throws {
        var random = TestRandom(seed: 2)
        let low = (0..<5_000).map { _ in Double.random(in: 0..<0.4, using: &random) }
        let high = (0..<5_000).map { _ in Double.random(in: 0.6..<1, using: &random) }
        #expect(abs(try Unlinkability(mated: high, nonMated: low).systemLinkability - 1) < 1e-12)
        #expect(try Unlinkability(mated: low, nonMated: low).systemLinkability == 0)
        let sameDistribution = (0..<5_000).map { _ in Double.random(in: 0..<0.4, using: &random) }
        #expect(try Unlinkability(mated: sameDistribution, nonMated: low, binCount: 20).systemLinkability < 0.05)
    }

    @Test("D↔sys from a known histogram")
    func unlinkabilityKnown() throws {
        // Two bins over [0.25, 0.75]: mated ½ | ½, non-mated ¾ | ¼ → LR 2/3 (D 0) and 2 (D 1/3).
        let result = try Unlinkability(mated: [0.25, 0.75], nonMated: [0.25, 0.25, 0.25, 0.75], binCount: 2)
        #expect(abs(result.systemLinkability - 1.0 / 6) < 1e-12)
        #expect(result.bins.map(\.localLinkability) == [0, 1.0 / 3])
        #expect(result.bins.first?.lowerBound == 0.25 && result.bins.last?.upperBound == 0.75)
    }

    @Test("Pairs: genuine for equal labels, impostor otherwise, each unordered pair once")
    func pairs() {
        let labels = ["a", "b", "a", "c", "a"]
        let pairs = ScorePairs(labels: labels) { Double($0 * 10 + $1) }
        #expect(pairs.genuine == [2, 4, 24])
        #expect(pairs.impostor == [1, 3, 12, 13, 14, 23, 34])
        let crossing = ScorePairs.crossing(labels: ["a", "b", "a"]) { Double($0 * 10 + $1) }
        #expect(crossing.genuine == [2, 20])
        #expect(crossing.impostor == [1, 10, 12, 21])
        #expect(ScorePairs.crossing(labels: ["a", "b"], includingSameSample: true) { Double($0 * 10 + $1) }.genuine == [0, 11])
    }
}

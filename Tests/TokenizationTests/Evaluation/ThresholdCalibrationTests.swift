import Testing
import TokenizationEvaluation

/// Thresholds for target false-match rates (`custos-bench eval --fmr`), on sets small enough to
/// work out by hand.
@Suite("Thresholds for target false-match rates")
struct ThresholdCalibrationTests {
    // Ten impostor scores 0.01 … 0.10; genuine scores around them.
    static let impostor = (1...10).map { Double($0) / 100 }
    static let genuine = [0.05, 0.095, 0.2, 0.5]

    @Test("The threshold for an FMR accepts at most target × impostors, the lowest such threshold")
    func byHand() throws {
        let metrics = try VerificationMetrics(genuine: Self.genuine, impostor: Self.impostor)
        // FMR ≤ 0.2 lets 2 of 10 impostors through: 0.09 and 0.10. The lowest threshold that
        // rejects 0.08 is the next score above it, 0.09; genuine below 0.09: 0.05 (1 of 4).
        let fifth = CalibratedThreshold(targetFalseMatchRate: 0.2, metrics: metrics)
        #expect(fifth.threshold == 0.09 && fifth.fmr == 0.2 && fifth.fnmr == 0.25 && fifth.impostors_accepted == 2)
        // FMR ≤ 0.1 lets only 0.10 through; the next score above 0.09 is the genuine 0.095.
        let tenth = CalibratedThreshold(targetFalseMatchRate: 0.1, metrics: metrics)
        #expect(tenth.threshold == 0.095 && tenth.fmr == 0.1 && tenth.fnmr == 0.25 && tenth.impostors_accepted == 1)
        // FMR ≤ 0.05 accepts no impostor: the threshold is the first genuine score above 0.10,
        // 0.2, and two of four genuine scores fall below it.
        let none = CalibratedThreshold(targetFalseMatchRate: 0.05, metrics: metrics)
        #expect(none.threshold == 0.2 && none.fmr == 0 && none.fnmr == 0.5 && none.impostors_accepted == 0)
        // 10 impostor comparisons are far from the 30 / 0.1 = 300 the rule of 30 asks for.
        #expect(!tenth.enough_impostors && tenth.impostor_comparisons == 10)
    }

    @Test("No threshold below +∞ when every genuine score is at or below the highest impostor")
    func acceptNothing() throws {
        let metrics = try VerificationMetrics(genuine: [0.05, 0.1], impostor: Self.impostor)
        let none = CalibratedThreshold(targetFalseMatchRate: 0.05, metrics: metrics)
        #expect(none.threshold == nil && none.fmr == 0 && none.fnmr == 1)
    }

    @Test("Enough impostors by the rule of 30: 30 / target comparisons")
    func ruleOfThirty() throws {
        let impostor = (0..<3_000).map { Double($0) / 3_000 }
        let metrics = try VerificationMetrics(genuine: [1], impostor: impostor)
        #expect(CalibratedThreshold(targetFalseMatchRate: 1e-2, metrics: metrics).enough_impostors)
        #expect(!CalibratedThreshold(targetFalseMatchRate: 1e-3, metrics: metrics).enough_impostors)
        #expect(CalibratedThreshold.impostorsNeeded(for: 1e-4) == 300_000)
    }

    @Test("GREEN, AMBER and RED shares of genuine and impostor comparisons")
    func shares() throws {
        let metrics = try VerificationMetrics(genuine: Self.genuine, impostor: Self.impostor)
        // GREEN ≥ 0.095, AMBER ≥ 0.06: genuine 0.05 RED, the other three GREEN; impostors 0.10
        // GREEN, 0.06–0.09 AMBER (4), the other five RED.
        let shares = DecisionShares(green: 0.095, amber: 0.06, metrics: metrics)
        #expect(shares.genuine_green == 0.75 && shares.genuine_amber == 0 && shares.genuine_red == 0.25)
        #expect(shares.impostor_green == 0.1 && abs(shares.impostor_amber - 0.4) < 1e-12 && shares.impostor_red == 0.5)
    }

    @Test("--fmr lists: rates between 0 and 1, in the order given; anything else named")
    func targets() throws {
        #expect(try FalseMatchRateTargets(parsing: "1e-4,1e-2").rates == [1e-4, 1e-2])
        #expect(try FalseMatchRateTargets(parsing: " 0.001 , 0.5").rates == [0.001, 0.5])
        #expect(throws: FalseMatchRateTargets.ParseError.empty) { try FalseMatchRateTargets(parsing: " ") }
        #expect(throws: FalseMatchRateTargets.ParseError.notANumber("x")) { try FalseMatchRateTargets(parsing: "1e-4,x") }
        #expect(throws: FalseMatchRateTargets.ParseError.notANumber("")) { try FalseMatchRateTargets(parsing: "1e-4,") }
        #expect(throws: FalseMatchRateTargets.ParseError.outOfRange(1)) { try FalseMatchRateTargets(parsing: "1") }
        #expect(throws: FalseMatchRateTargets.ParseError.outOfRange(0)) { try FalseMatchRateTargets(parsing: "0") }
    }
}

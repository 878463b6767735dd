import CustosModel
import Testing
import Verification

@Suite("Verification core: decisions and the 1:N gallery")
struct VerificationCoreTests {
    private func token(_ seed: UInt32, version: Int = 1, copyFrom other: BiometricToken? = nil, sharing fraction: Double = 0) -> BiometricToken {
        var state = seed &* 2_654_435_761 | 1
        var values = (0..<1024).map { _ -> UInt32 in
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            return state
        }
        if let other {
            for index in 0..<Int(1024 * fraction) { values[index] = other.values[index] }
        }
        return BiometricToken(keyVersion: version, values: values)
    }

    @Test("Scores map to green / amber / red by the tenant's thresholds; red flags, it does not reject")
    func decisions() {
        let thresholds = DecisionThresholds.default(for: .compact)
        let band = thresholds.green - thresholds.amber
        #expect(thresholds.decide(score: 0.9) == Decision(color: .green, confidence: .high))
        // The old GREEN threshold (0.30, below which a quarter of genuine LFW faces fell) is
        // well inside GREEN since the defaults are set for FMR 1e-4 and 1e-2.
        #expect(thresholds.decide(score: 0.30) == Decision(color: .green, confidence: .high))
        #expect(thresholds.decide(score: thresholds.green + band / 6) == Decision(color: .green, confidence: .low))
        #expect(thresholds.decide(score: thresholds.green - band / 2) == Decision(color: .amber, confidence: .medium))
        // An unrelated face (1/16 of positions agree by chance) is RED, far from AMBER.
        #expect(thresholds.decide(score: 0.0625) == Decision(color: .red, confidence: .high))
        #expect(thresholds.decide(score: 0).color == .red)
        #expect(DecisionThresholds(green: 0.2, amber: 0.3) == nil, "amber must be below green")
        #expect(DecisionThresholds(green: 0.5, amber: 0) == nil)
        let strict = DecisionThresholds(green: 0.6, amber: 0.4)!
        #expect(strict.decide(score: 0.5).color == .amber)
    }

    @Test("Identification finds the enrolled subject first and agrees with a brute-force ranking of fingerprints")
    func identification() {
        var gallery = TokenGallery(capacity: 1_000)
        var enrolled = [String: BiometricToken]()
        for index in 0..<300 {
            let subject = "subject-\(index)"
            enrolled[subject] = token(UInt32(index + 1))
            gallery.enrol(subject, enrolled[subject]!)
        }
        let target = enrolled["subject-123"]!
        let probe = token(9_999, copyFrom: target, sharing: 0.6)
        let top = gallery.identify(probe, top: 5)
        #expect(top.first?.subject == "subject-123")
        #expect(abs((top.first?.score ?? 0) - 0.6) < 0.01)
        // The gallery holds 1-byte fingerprints (the low byte of each value): its scores are
        // those of the fingerprints, never below the tokens' own.
        func lowBytes(_ token: BiometricToken) -> [UInt8] { token.values.map { UInt8(truncatingIfNeeded: $0) } }
        let bruteForce = enrolled.map { entry in
            (entry.key, Double(zip(lowBytes(probe), lowBytes(entry.value)).filter { $0 == $1 }.count) / 1024)
        }.sorted { $0.1 > $1.1 }
        #expect(top.map(\.score) == bruteForce.prefix(5).map(\.1))
        #expect(top.allSatisfy { candidate in candidate.score >= probe.score(against: enrolled[candidate.subject]!) })
        // Another key version never matches.
        let otherVersion = BiometricToken(keyVersion: 2, values: target.values)
        #expect(gallery.identify(otherVersion, top: 3).isEmpty)
    }

    @Test("Past its capacity the gallery evicts the least recently used subject, and removal works")
    func eviction() {
        var gallery = TokenGallery(capacity: 3)
        gallery.enrol("a", token(1))
        gallery.enrol("b", token(2))
        gallery.enrol("c", token(3))
        _ = gallery.identify(token(99, copyFrom: token(1), sharing: 0.9), top: 1)  // "a" was just used
        #expect(gallery.enrol("d", token(4)) == "b", "b is the least recently used")
        #expect(gallery.count == 3)
        #expect(gallery.identify(token(2), top: 3).map(\.subject).contains("b") == false)
        gallery.remove("a")
        #expect(gallery.count == 2)
        #expect(gallery.identify(token(1), top: 3).map(\.subject).contains("a") == false)
        #expect(gallery.enrol("c", token(33)) == nil, "re-enrolling replaces, never evicts")
        #expect(gallery.count == 2)
    }

    @Test("Thresholds per format: each from the same FMRs, a quaternary impostor RED under its own but GREEN under compact's, bands comparable")
    func thresholdsPerFormat() {
        let compact = DecisionThresholds.default(for: .compact), quaternary = DecisionThresholds.default(for: .quaternary)
        #expect(DecisionThresholds.default(for: .wide) == compact)
        #expect(quaternary.amber > BiometricTokenFormat.quaternary.shape.unrelatedScore)
        #expect(compact.amber > BiometricTokenFormat.compact.shape.unrelatedScore)
        // A typical quaternary impostor scores about 0.44: one pair for both formats would pass it.
        #expect(quaternary.decide(score: 0.44).color == .red)
        #expect(compact.decide(score: 0.44).color == .green)
        // A tenant that never set thresholds decides every format with its defaults.
        #expect(TenantPolicy.default.thresholdsFormat == nil)
        #expect(TenantPolicy.default.thresholds(for: .quaternary) == quaternary)
        #expect(TenantPolicy.default.thresholds(for: .compact) == compact)
        // Band positions: 0 at AMBER, 1 at GREEN, whatever the format's scale.
        #expect(compact.bandPosition(of: compact.green) == 1 && quaternary.bandPosition(of: quaternary.green) == 1)
        #expect(compact.bandPosition(of: compact.amber) == 0 && quaternary.bandPosition(of: quaternary.amber) == 0)
        #expect(quaternary.bandPosition(of: 0.44) < 0, "a quaternary impostor ranks below any AMBER")
    }
}

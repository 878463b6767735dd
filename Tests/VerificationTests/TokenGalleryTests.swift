import CustosModel
import Testing
@testable import Verification

/// The in-memory 1:N scan: its byte count against a scalar count, and its sliced (multi-thread)
/// scan against a scalar reference ranking.
@Suite("Token gallery scan")
struct TokenGalleryTests {
    struct Random: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func compact(_ random: inout Random, below: UInt32, version: Int = 1) -> BiometricToken {
        BiometricToken(keyVersion: version, format: .compact, values: (0..<1024).map { _ in UInt32.random(in: 0...below, using: &random) })
    }

    @Test("The SWAR byte count equals a scalar count, including none, all and single lanes")
    func countEqualMatchesScalar() {
        var random = Random(state: 31)
        var pairs = (0..<200).map { round -> ([UInt8], [UInt8]) in
            let below: UInt8 = [1, 3, 255][round % 3]
            return ((0..<1024).map { _ in UInt8.random(in: 0...below, using: &random) }, (0..<1024).map { _ in UInt8.random(in: 0...below, using: &random) })
        }
        let zeros = [UInt8](repeating: 0, count: 1024)
        var one = zeros
        one[1023] = 0x80
        pairs += [(zeros, zeros), (zeros, [UInt8](repeating: 0xFF, count: 1024)), (zeros, one), ([UInt8](repeating: 0x80, count: 1024), one)]
        for (left, right) in pairs {
            let scalar = zip(left, right).filter { $0 == $1 }.count
            let counted = left.withUnsafeBytes { a in right.withUnsafeBytes { b in PackedAgreement.equalBytes(a.baseAddress!, b.baseAddress!, byteCount: 1024) } }
            #expect(counted == scalar)
        }
    }

    @Test("A sliced scan ranks like a scalar reference: agreement first, then gallery order; only the probe's version")
    func slicedScanMatchesReference() {
        var random = Random(state: 32)
        var gallery = TokenGallery(capacity: 5_000)
        var tokens = [BiometricToken]()
        for index in 0..<3_001 {
            // Values 0…3: about 256 positions agree by chance, so ranks and ties are many.
            let token = Self.compact(&random, below: 3)
            tokens.append(token)
            gallery.enrol("s\(index)", token)
        }
        gallery.enrol("other-version", BiometricToken(keyVersion: 2, format: .compact, values: tokens[0].values))
        for probeIndex in [0, 1_500, 3_000] {
            let probe = tokens[probeIndex]
            let reference = tokens.indices
                .map { (index: $0, matches: probe.matchingPositions(with: tokens[$0])) }
                .sorted { ($0.matches, $1.index) > ($1.matches, $0.index) }
                .prefix(7)
            for threads in [1, 2, 3] {
                let found = gallery.identify(probe, top: 7, threads: threads)
                #expect(found.map(\.subject) == reference.map { "s\($0.index)" }, "\(threads) slices")
                #expect(found.map(\.score) == reference.map { Double($0.matches) / 1024 })
            }
        }
    }

    @Test("Quaternary fingerprints are the tokens: the scan's 2-bit agreement is the token score, ranked like a reference")
    func quaternaryScanMatchesTokenScores() {
        var random = Random(state: 33)
        var gallery = TokenGallery(capacity: 5_000)
        var tokens = [BiometricToken]()
        for index in 0..<2_001 {
            let token = BiometricToken(keyVersion: 1, format: .quaternary, values: (0..<4096).map { _ in UInt32.random(in: 0...3, using: &random) })
            tokens.append(token)
            gallery.enrol("s\(index)", token)
        }
        // The probe is a subject with a quarter of its positions changed: it must come first.
        var probeValues = tokens[1_234].values
        for index in stride(from: 0, to: 4096, by: 4) { probeValues[index] = (probeValues[index] + 1) % 4 }
        let probe = BiometricToken(keyVersion: 1, format: .quaternary, values: probeValues)
        let reference = tokens.indices
            .map { (index: $0, matches: zip(probe.values, tokens[$0].values).filter { $0 == $1 }.count) }
            .sorted { ($0.matches, $1.index) > ($1.matches, $0.index) }
            .prefix(5)
        for threads in [1, 2] {
            let found = gallery.identify(probe, top: 5, threads: threads)
            #expect(found.first?.subject == "s1234" && found.first?.score == 0.75)
            #expect(found.map(\.subject) == reference.map { "s\($0.index)" }, "\(threads) slices")
            #expect(found.map(\.score) == reference.map { probe.score(against: tokens[$0.index]) }, "fingerprint scores are token scores")
        }
    }
}

import CustosModel
import Foundation
import Testing
import Tokenization

/// Timings against the targets of DESIGN §6, in optimised builds only (`swift test -c release`).
@Suite("Performance", .enabled(if: Build.isOptimized, "timings mean nothing in a debug build"), .serialized)
struct PerformanceTests {
    static func median(_ runs: Int, _ body: () throws -> Void) rethrows -> Duration {
        let clock = ContinuousClock()
        var times: [Duration] = []
        for _ in 0..<runs { times.append(try clock.measure(body)) }
        return times.sorted()[runs / 2]
    }

    @Test("symbols(for:) at d = 512: structured well under 250 µs")
    func symbolsTiming() throws {
        var random = TestRandom(seed: 1)
        let vector = try FeatureVector(random.unitVector(dimension: 512))
        let clock = ContinuousClock()
        for kind in IndexOfMaxHashing.ProjectionKind.allCases {
            var hashing: IndexOfMaxHashing?
            let setup = try clock.measure { hashing = try IndexOfMaxHashing(seed: seed(1), dimension: 512, kind: kind) }
            let time = try Self.median(kind == .structured ? 2_000 : 50) { _ = try hashing!.symbols(for: vector) }
            print("symbols(for:) \(kind) d=512: median \(time), init \(setup)")
            if kind == .structured { #expect(time < .microseconds(250)) }
        }
    }

    @Test("1:N scan of 100,000 tokens within 50 ms")
    func scanTiming() {
        var random = TestRandom(seed: 2)
        let tokens = (0..<100_000).map { _ in
            BiometricToken(keyVersion: 1, values: (0..<1024).map { _ in UInt32(truncatingIfNeeded: random.next()) })
        }
        let probe = tokens[77]
        var best = 0.0
        let time = Self.median(9) {
            var top = 0.0
            for token in tokens { top = max(top, probe.score(against: token)) }
            best = top
        }
        print("scan of 100k tokens: median \(time)")
        #expect(best == 1)
        #expect(time < .milliseconds(50))
    }
}

import CustosModel
import Custody
import Foundation

/// The cost of counting key uses for the audit log (issue 11 §4): one operation measured in
/// alternating phases of the same run — recording on, off, on, off… — so drift on a shared
/// machine hits both sides alike; reports the mean rate of each side and their ratio.
struct RecordingComparison: Encodable {
    let operation: String
    let on_per_s: Double
    let off_per_s: Double
    /// on ÷ off: 1 means no measurable cost; the target is at least 0.95.
    let ratio_on_to_off: Double
    /// Each phase's rate, in the order run (on first).
    let phases_per_s: [Double]
    let seconds_per_phase: Double

    /// Runs `rounds` pairs of phases; `setRecording` switches the counter before each phase and
    /// is left on afterwards. `phase` measures one phase and returns its rate per second.
    static func measure(
        _ operation: String, rounds: Int, secondsPerPhase: Double, setRecording: (Bool) -> Void, _ phase: () async throws -> Double
    ) async throws -> RecordingComparison {
        var on = [Double](), off = [Double](), all = [Double]()
        for index in 0..<(2 * rounds) {
            let recording = index % 2 == 0
            setRecording(recording)
            let rate = try await phase()
            all.append(rate)
            if recording { on.append(rate) } else { off.append(rate) }
        }
        setRecording(true)
        let meanOn = on.reduce(0, +) / Double(max(1, on.count))
        let meanOff = off.reduce(0, +) / Double(max(1, off.count))
        func rounded(_ value: Double, _ places: Double) -> Double { (value * places).rounded() / places }
        return RecordingComparison(
            operation: operation, on_per_s: rounded(meanOn, 10), off_per_s: rounded(meanOff, 10),
            ratio_on_to_off: meanOff > 0 ? rounded(meanOn / meanOff, 10_000) : 0, phases_per_s: all.map { rounded($0, 10) },
            seconds_per_phase: secondsPerPhase
        )
    }

    var line: String {
        "\(operation): recording on \(on_per_s.rounded()) /s, off \(off_per_s.rounded()) /s, ratio \(ratio_on_to_off) (phases \(phases_per_s.map { String(Int($0.rounded())) }.joined(separator: " / ")))"
    }
}

/// One `KeyUseCounter.record` alone: nanoseconds per call on one thread, and on `threads`
/// threads counting the same tenant at once (the worst case for the lock).
struct CounterCost: Encodable {
    let ns_per_record_one_thread: Double
    let ns_per_record_contended: Double
    let threads: Int

    static func measure(threads: Int, calls: Int = 1_000_000) -> CounterCost {
        let tenant = TenantID("00000000-0000-4000-8000-000000000001")!
        func run(_ threadCount: Int) -> Double {
            let counter = KeyUseCounter()
            let group = DispatchGroup()
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<threadCount {
                group.enter()
                Thread {
                    for _ in 0..<calls { counter.record(tenant, .apiKeyPepper, version: 1, .apiKeyVerify, .success) }
                    group.leave()
                }.start()
            }
            group.wait()
            return Double(DispatchTime.now().uptimeNanoseconds - start) / Double(calls * threadCount) * Double(threadCount)
        }
        return CounterCost(ns_per_record_one_thread: (run(1) * 10).rounded() / 10, ns_per_record_contended: (run(threads) * 10).rounded() / 10, threads: threads)
    }
}

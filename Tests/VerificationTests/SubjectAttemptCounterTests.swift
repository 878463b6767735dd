import CustosModel
import Foundation
import Testing
@testable import Verification

@Suite("A subject's attempts as one instance counts them")
struct SubjectAttemptCounterTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("Reserved attempts count at once (calls in flight cannot all pass); one given back frees its place; the window's end lets the subject in")
    func window() throws {
        let counter = SubjectAttemptCounter(limit: VerificationAttemptLimit(attempts: 2, window: .seconds(3_600)))
        try counter.reserve("t/a", now: Self.start)
        try counter.reserve("t/a", now: Self.start + 1)
        #expect(throws: VerificationError.self, "two in flight use the limit up") { try counter.reserve("t/a", now: Self.start + 2) }
        counter.release("t/a")
        try counter.reserve("t/a", now: Self.start + 3)
        #expect(throws: VerificationError.self) { try counter.reserve("t/a", now: Self.start + 3_599) }
        try counter.reserve("t/b", now: Self.start + 20)
        try counter.reserve("t/a", now: Self.start + 3_600)
    }

    @Test("Past its capacity it drops windows that are over, then those with the fewest attempts: a tenant filling it with fresh subjects does not free the one it probes")
    func capacity() throws {
        let counter = SubjectAttemptCounter(limit: VerificationAttemptLimit(attempts: 2, window: .seconds(3_600)), capacity: 4)
        try counter.reserve("t/probed", now: Self.start)
        try counter.reserve("t/probed", now: Self.start)
        for index in 0..<20 { try counter.reserve("t/fresh-\(index)", now: Self.start + Double(index)) }
        #expect(throws: VerificationError.self, "the probed subject kept its count") { try counter.reserve("t/probed", now: Self.start + 30) }
        try counter.reserve("t/late", now: Self.start + 3_700)
        try counter.reserve("t/probed", now: Self.start + 3_700)
    }
}

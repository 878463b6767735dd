import CustosModel
import Foundation
import Testing
@testable import Verification

@Suite("A subject's attempts as one instance counts them")
struct SubjectAttemptCounterTests {
    static let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("The limit refuses within the window and lets the subject in once it is over; other subjects are apart")
    func window() throws {
        let counter = SubjectAttemptCounter(limit: VerificationAttemptLimit(attempts: 2, window: .seconds(3_600)))
        for offset in [0.0, 10] {
            try counter.check("t/a", now: Self.start + offset)
            counter.count("t/a", now: Self.start + offset)
        }
        #expect(throws: VerificationError.self) { try counter.check("t/a", now: Self.start + 3_599) }
        try counter.check("t/b", now: Self.start + 20)
        try counter.check("t/a", now: Self.start + 3_600)
    }

    @Test("Past its capacity it drops windows that are over, then the oldest: those subjects are counted afresh")
    func capacity() throws {
        let counter = SubjectAttemptCounter(limit: VerificationAttemptLimit(attempts: 1, window: .seconds(3_600)), capacity: 2)
        counter.count("t/a", now: Self.start)
        counter.count("t/b", now: Self.start + 1)
        counter.count("t/c", now: Self.start + 2)
        try counter.check("t/a", now: Self.start + 3)
        #expect(throws: VerificationError.self) { try counter.check("t/b", now: Self.start + 3) }
        #expect(throws: VerificationError.self) { try counter.check("t/c", now: Self.start + 3) }
        counter.count("t/d", now: Self.start + 3_603)
        try counter.check("t/b", now: Self.start + 3_603)
        #expect(throws: VerificationError.self) { try counter.check("t/d", now: Self.start + 3_603) }
    }
}

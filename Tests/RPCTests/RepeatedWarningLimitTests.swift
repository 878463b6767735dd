@testable import RPC
import Testing

@Suite("RepeatedWarningLimit: one line per cause per interval, the rest counted")
struct RepeatedWarningLimitTests {
    @Test("A cause repeated within the interval is held back and counted; after it, one line with the count")
    func heldBackThenCounted() {
        let limit = RepeatedWarningLimit(interval: .seconds(60))
        let start = ContinuousClock.now
        #expect(limit.admit("tenant a, version 1", now: start) == 0)
        #expect(limit.admit("tenant a, version 1", now: start + .seconds(1)) == nil)
        #expect(limit.admit("tenant a, version 1", now: start + .seconds(59)) == nil)
        // Another cause is not held back by the first.
        #expect(limit.admit("tenant b, version 1", now: start + .seconds(2)) == 0)
        #expect(limit.admit("tenant a, version 1", now: start + .seconds(60)) == 2)
        #expect(limit.admit("tenant a, version 1", now: start + .seconds(61)) == nil)
    }

    @Test("Past its capacity it forgets expired causes first, and never grows beyond it")
    func bounded() {
        let limit = RepeatedWarningLimit(interval: .seconds(60), capacity: 3)
        let start = ContinuousClock.now
        for cause in ["a", "b", "c"] { #expect(limit.admit(cause, now: start) == 0) }
        // Full, nothing expired: everything is forgotten, so "a" logs again with no count.
        #expect(limit.admit("d", now: start + .seconds(1)) == 0)
        #expect(limit.admit("a", now: start + .seconds(2)) == 0)
        #expect(limit.admit("d", now: start + .seconds(3)) == nil)
        #expect(limit.admit("e", now: start + .seconds(4)) == 0)
        // "a", "d" and "e" held; "a" and "d" still within their minute.
        #expect(limit.admit("a", now: start + .seconds(5)) == nil)
    }
}

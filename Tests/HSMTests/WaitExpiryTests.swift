@testable import HSM
import Testing

#if canImport(Glibc)
import Glibc
#endif

private let ms: UInt64 = 1_000_000

@Suite("A wait for a session that expired: behind a recovery or behind busy sessions (no HSM)")
struct WaitExpiryTests {
    @Test("Held back by drains for at least half the wait: the recovery's fault ('unavailable'); less: busy sessions ('exhausted')", arguments: [
        (waited: 100 * ms, heldBack: UInt64(0), byRecovery: false),
        (100 * ms, 3 * ms, false),
        (100 * ms, 49 * ms, false),
        (100 * ms, 50 * ms, true),
        (100 * ms, 100 * ms, true),
        (2_000 * ms, 900 * ms, false),
    ])
    func rule(waited: UInt64, heldBack: UInt64, byRecovery: Bool) {
        #expect(PendingRequest.heldBackByRecovery(waited: waited, heldBack: heldBack) == byRecovery)
    }

    @Test("The gate counts the time its drains hold calls back, the running drain's included, and nothing between drains")
    func gateCountsHeldBackTime() {
        let gate = CallGate()
        #expect(gate.heldBackNanoseconds == 0)
        gate.enter()
        gate.exit()
        #expect(gate.heldBackNanoseconds == 0, "calls alone hold nothing back")
        gate.drain {
            usleep(30_000)
            #expect(gate.heldBackNanoseconds >= 30 * ms, "the running drain counts")
            usleep(20_000)
        }
        let afterDrain = gate.heldBackNanoseconds
        #expect(afterDrain >= 50 * ms)
        usleep(30_000)
        #expect(gate.heldBackNanoseconds == afterDrain, "no drain, no time held back")
    }
}

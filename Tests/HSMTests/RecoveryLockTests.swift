#if canImport(Glibc)
import Glibc
#endif
@testable import HSM
import Synchronization
import Testing

@Suite("Recovery lock: a report made during a recovery waits for its end (no HSM)")
struct RecoveryLockTests {
    @Test("The waiting report is fed again when the recovery ends", arguments: [
        (end: End.succeeded, answer: RecoveryStateMachine.RecoveryAction.alreadyDone),
        // A failed re-login leaves the generation: the waiting report recovers again itself.
        (.failed, .start(.login)),
        (.shutDown, .notRunning),
    ])
    func waiterIsReleased(end: End, answer: RecoveryStateMachine.RecoveryAction) throws {
        let lock = RecoveryLock(RecoveryStateMachine(backoff: 1...2, login: .verified))
        #expect(lock.begin { $0.loginLost(seenGeneration: 1) } == .start(.login))
        let seen = Seen()
        let waiter = try startThread(name: "test-waiter") {
            let action = lock.begin { machine in
                seen.steps.wrappingAdd(1, ordering: .sequentiallyConsistent)
                return machine.loginLost(seenGeneration: 1)
            }
            seen.result.withLock { $0 = action }
        }
        // Once the waiter has stepped it holds the lock until it sleeps on the condition, so the
        // next step below happens while it waits.
        while seen.steps.load(ordering: .sequentiallyConsistent) == 0 { usleep(1000) }
        #expect(seen.result.withLock { $0 } == nil, "the report does not return while the recovery runs")
        switch end {
        case .succeeded:
            lock.step { $0.recoveryDrained() }
            _ = lock.step { $0.recoverySucceeded() }
        case .failed:
            _ = lock.step { $0.recoveryFailed(now: 0, pinRejected: false) }
        case .shutDown:
            lock.step { $0.shutDown() }
        }
        pthread_join(waiter, nil)
        #expect(seen.result.withLock { $0 } == answer)
        #expect(seen.steps.load(ordering: .sequentiallyConsistent) == 2, "fed once while waiting, once after")
        #expect(lock.generation == (end == .succeeded ? 2 : 1), "the published generation follows the machine")
    }

    /// What the waiting thread saw.
    final class Seen: Sendable {
        let steps = Atomic<Int>(0)
        let result = Mutex<RecoveryStateMachine.RecoveryAction?>(nil)
    }

    enum End: Sendable, CustomTestStringConvertible {
        case succeeded, failed, shutDown
        var testDescription: String { "\(self)" }
    }
}

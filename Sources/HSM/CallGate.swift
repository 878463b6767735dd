import Synchronization

/// Counts PKCS#11 calls in flight and lets recovery wait until there are none.
///
/// SoftHSM crashes when `C_CloseAllSessions`, `C_Logout` or `C_Finalize` race with calls in
/// flight (DESIGN §4), so every call enters the gate and every teardown drains it first.
/// The common path is two atomic operations; the lock is only taken while a drain is pending.
final class CallGate: Sendable {
    private let inFlight = Atomic<Int>(0)
    private let draining = Atomic<Bool>(false)
    private let lock = ConditionLock()
    /// Time new calls were held back by drains that ended, and when the running one began
    /// holding them back (0: none runs).
    private let heldBackByEndedDrains = Atomic<UInt64>(0)
    private let drainHoldingSince = Atomic<UInt64>(0)

    /// Nanoseconds drains have held new calls back since the gate was made, the running one's
    /// included: what a waiting request compares to tell a recovery from busy sessions. May
    /// read a little low while a drain ends, never high.
    var heldBackNanoseconds: UInt64 {
        let since = drainHoldingSince.load(ordering: .acquiring)
        let ended = heldBackByEndedDrains.load(ordering: .acquiring)
        return since == 0 ? ended : ended &+ (monotonicNanoseconds() &- since)
    }

    /// Waits while a drain is in progress, then counts one call in.
    func enter() {
        while true {
            if !draining.load(ordering: .sequentiallyConsistent) {
                inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
                // Dekker-style re-check: a drain that started in between must see us or we it.
                if !draining.load(ordering: .sequentiallyConsistent) { return }
                exit()
            }
            lock.withLock {
                while draining.load(ordering: .sequentiallyConsistent) { lock.wait() }
            }
        }
    }

    func exit() {
        let remaining = inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent).newValue
        if remaining == 0 && draining.load(ordering: .sequentiallyConsistent) {
            lock.withLock { lock.broadcast() }
        }
    }

    /// Blocks new calls, waits for those in flight to finish, runs `body`, then reopens.
    /// Must not be called by a thread that is inside the gate.
    func drain<R>(_ body: () throws -> R) rethrows -> R {
        lock.withLock {
            while draining.load(ordering: .sequentiallyConsistent) { lock.wait() }
            draining.store(true, ordering: .sequentiallyConsistent)
            drainHoldingSince.store(monotonicNanoseconds(), ordering: .releasing)
            while inFlight.load(ordering: .sequentiallyConsistent) > 0 { lock.wait() }
        }
        defer {
            lock.withLock {
                draining.store(false, ordering: .sequentiallyConsistent)
                // Cleared before it is added: a reader in between reads low, never twice.
                let since = drainHoldingSince.exchange(0, ordering: .acquiringAndReleasing)
                heldBackByEndedDrains.wrappingAdd(monotonicNanoseconds() &- since, ordering: .releasing)
                lock.broadcast()
            }
        }
        return try body()
    }

    var callsInFlight: Int { inFlight.load(ordering: .relaxed) }
}

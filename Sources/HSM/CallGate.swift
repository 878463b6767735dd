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
            while inFlight.load(ordering: .sequentiallyConsistent) > 0 { lock.wait() }
        }
        defer {
            lock.withLock {
                draining.store(false, ordering: .sequentiallyConsistent)
                lock.broadcast()
            }
        }
        return try body()
    }

    var callsInFlight: Int { inFlight.load(ordering: .relaxed) }
}

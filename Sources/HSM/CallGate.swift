/// Counts PKCS#11 calls in flight and lets recovery wait until there are none.
///
/// SoftHSM crashes when `C_CloseAllSessions`, `C_Logout` or `C_Finalize` race with calls in
/// flight (DESIGN §4), so every call enters the gate and every teardown drains it first.
final class CallGate: Sendable {
    private let lock = ConditionLock()
    // SAFETY: both fields are read and written only while `lock` is held.
    private nonisolated(unsafe) var inFlight = 0
    private nonisolated(unsafe) var draining = false

    /// Waits while a drain is in progress, then counts one call in.
    func enter() {
        lock.withLock {
            while draining { lock.wait() }
            inFlight += 1
        }
    }

    func exit() {
        lock.withLock {
            inFlight -= 1
            if draining && inFlight == 0 { lock.broadcast() }
        }
    }

    /// Blocks new calls, waits for those in flight to finish, runs `body`, then reopens.
    /// Must not be called by a thread that is inside the gate.
    func drain<R>(_ body: () throws -> R) rethrows -> R {
        lock.withLock {
            while draining { lock.wait() }
            draining = true
            while inFlight > 0 { lock.wait() }
        }
        defer {
            lock.withLock {
                draining = false
                lock.broadcast()
            }
        }
        return try body()
    }

    var callsInFlight: Int { lock.withLock { inFlight } }
}

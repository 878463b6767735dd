import Synchronization

/// The pool's ``RecoveryStateMachine`` behind a lock, with what the hot path reads published
/// as atomics, so a healthy call takes no lock.
///
/// The lock is held only for one step of the machine, never across a PKCS#11 call: a recovery
/// runs outside it, and a report that must wait for that recovery sleeps on its condition.
final class RecoveryLock: @unchecked Sendable {
    // SAFETY: `machine` is read and written only while `lock` is held (every access below is
    // inside `lock.withLock`). The atomics are written only there too, after each step, so
    // they never run ahead of the machine; readers outside the lock see a recent value.
    private let lock = ConditionLock()
    private var machine: RecoveryStateMachine
    private let publishedGeneration: Atomic<UInt64>
    private let publishedEpoch: Atomic<UInt64>
    private let publishedBreakerOpen: Atomic<Bool>

    init(_ machine: RecoveryStateMachine) {
        self.machine = machine
        publishedGeneration = Atomic(machine.generation)
        publishedEpoch = Atomic(machine.epoch)
        publishedBreakerOpen = Atomic(machine.isBreakerOpen)
    }

    /// Cached key handles are valid for one generation.
    var generation: UInt64 { publishedGeneration.load(ordering: .acquiring) }
    /// Worker sessions are valid for one epoch.
    var epoch: UInt64 { publishedEpoch.load(ordering: .acquiring) }
    var breakerOpen: Bool { publishedBreakerOpen.load(ordering: .acquiring) }

    /// Reads the machine.
    func read<R>(_ body: (RecoveryStateMachine) -> R) -> R {
        lock.withLock { body(machine) }
    }

    /// Feeds the machine one event and publishes the result; wakes the reports waiting for a
    /// recovery when the phase changed.
    func step<R>(_ event: (inout RecoveryStateMachine) -> R) -> R {
        lock.withLock { stepLocked(event) }
    }

    /// Like ``step(_:)``, but while the machine answers ``RecoveryStateMachine/RecoveryAction/awaitRecovery``
    /// sleeps until the running recovery ends and feeds the event again. The caller must not be
    /// inside the call gate (the recovery drains it).
    func begin(_ event: (inout RecoveryStateMachine) -> RecoveryStateMachine.RecoveryAction) -> RecoveryStateMachine.RecoveryAction {
        lock.withLock {
            while true {
                let action = stepLocked(event)
                guard action == .awaitRecovery else { return action }
                lock.wait()
            }
        }
    }

    private func stepLocked<R>(_ event: (inout RecoveryStateMachine) -> R) -> R {
        let phase = machine.phase
        let result = event(&machine)
        publishedGeneration.store(machine.generation, ordering: .releasing)
        publishedEpoch.store(machine.epoch, ordering: .releasing)
        publishedBreakerOpen.store(machine.isBreakerOpen, ordering: .releasing)
        if machine.phase != phase { lock.broadcast() }
        return result
    }
}

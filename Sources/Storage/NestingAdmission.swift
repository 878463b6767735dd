import Synchronization

/// Admits at most `limit` bodies at once; the others wait, in arrival order, before they start.
///
/// For transactions that need two connections of one pool at once
/// (``Database/withNestingTransaction(context:_:)``): admitted before taking their first
/// connection, so a waiter holds none. Waiting is not cancellable: each admitted body is bounded
/// by the operation timeout of its leases.
final class NestingAdmission: Sendable {
    private let state: Mutex<(free: Int, waiters: [CheckedContinuation<Void, Never>])>

    init(limit: Int) {
        state = Mutex((max(1, limit), []))
    }

    /// Bodies waiting for their turn (tests observe the queue with it).
    var waiting: Int { state.withLock { $0.waiters.count } }

    /// Waits for a turn; each turn is given back with ``release()``, exactly once.
    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                guard state.free > 0 else {
                    state.waiters.append(continuation)
                    return false
                }
                state.free -= 1
                return true
            }
            if admitted { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiters.isEmpty else {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

import Synchronization

/// Runs one body at a time per key, in arrival order; bodies under different keys run freely.
///
/// Used where a read-then-write sequence must not interleave with itself for one tenant inside
/// this process (the database guards the same sequence across processes: webhook key creation),
/// and for the transactions that need two connections of one pool
/// (``Database/withNestingTransaction(context:_:)``, which gives its turn back only when its
/// connection is back). Waiting is not cancellable: a waiter's turn comes as soon as the body
/// ahead of it ends, and bodies are short or bounded by a timeout.
package final class KeyedSerializer<Key: Hashable & Sendable>: Sendable {
    /// Keys with a body running, each with the waiters queued behind it.
    private let waiting = Mutex([Key: [CheckedContinuation<Void, Never>]]())

    package init() {}

    package func run<R>(_ key: Key, _ body: () async throws -> R) async throws -> R {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    /// Bodies queued behind the one running under `key` (tests observe the queue with it).
    package func waiters(_ key: Key) -> Int {
        waiting.withLock { $0[key]?.count ?? 0 }
    }

    /// Waits for `key`'s turn; give it back with ``release(_:)``, exactly once.
    package func acquire(_ key: Key) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let free = waiting.withLock { waiting -> Bool in
                guard waiting[key] != nil else {
                    waiting[key] = []
                    return true
                }
                waiting[key]?.append(continuation)
                return false
            }
            if free { continuation.resume() }
        }
    }

    package func release(_ key: Key) {
        let next = waiting.withLock { waiting -> CheckedContinuation<Void, Never>? in
            guard var queue = waiting[key], !queue.isEmpty else {
                waiting[key] = nil
                return nil
            }
            let first = queue.removeFirst()
            waiting[key] = queue
            return first
        }
        next?.resume()
    }
}

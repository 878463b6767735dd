import Synchronization

/// One refresh at a time per key: callers that miss the same cache entry while its refresh is
/// under way wait for that refresh instead of each running the same query.
///
/// Without it, every caller that found a 5-second cache expired read the database at once (32
/// callers: 32 transactions for one row, seen as most of the commits above one per call in
/// `scripts/bench rpc`). The refresh runs in a task of its own, so a waiter that goes away does
/// not cancel it for the others; every waiter gets its value or its error.
///
/// A cache that can be invalidated must put its generation into the key: a caller that arrives
/// after an invalidation must not be handed a read that began before it.
public final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private let inFlight = Mutex([Key: Task<Value, any Error>]())

    public init() {}

    /// `refresh`'s result, run once for all callers that ask for `key` while it runs.
    public func run(_ key: Key, _ refresh: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let task = inFlight.withLock { flights -> Task<Value, any Error> in
            if let running = flights[key] { return running }
            let task = Task<Value, any Error> {
                // The entry is this task's until here: a new one is only made when none exists.
                defer { _ = self.inFlight.withLock { $0.removeValue(forKey: key) } }
                return try await refresh()
            }
            flights[key] = task
            return task
        }
        return try await task.value
    }
}

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
///
/// In debug builds the refresh's database leases are checked against the leases its waiters
/// hold (``HeldLeases``): a waiter holding a connection of the pool the refresh needs waits for a
/// second connection of its own.
public final class SingleFlight<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Flight: Sendable {
        let task: Task<Value, any Error>
        let waiters: FlightWaiters
    }

    private let inFlight = Mutex([Key: Flight]())

    public init() {}

    /// `refresh`'s result, run once for all callers that ask for `key` while it runs.
    public func run(_ key: Key, _ refresh: @escaping @Sendable () async throws -> Value) async throws -> Value {
        let flight = inFlight.withLock { flights -> Flight in
            if let running = flights[key] { return running }
            let waiters = FlightWaiters()
            let task = Task<Value, any Error> {
                // The entry is this task's until here: a new one is only made when none exists.
                defer { _ = self.inFlight.withLock { $0.removeValue(forKey: key) } }
                #if DEBUG
                // The starter's leases come with the task; its waiters' are added as they come.
                var leases = Database.leases
                leases.flights.append(waiters)
                return try await Database.$leases.withValue(leases) { try await refresh() }
                #else
                return try await refresh()
                #endif
            }
            let flight = Flight(task: task, waiters: waiters)
            flights[key] = flight
            return flight
        }
        #if DEBUG
        let ticket = flight.waiters.join(Database.leases)
        defer { flight.waiters.leave(ticket) }
        #endif
        return try await flight.task.value
    }

    /// Callers waiting for `key`'s refresh now (debug builds; 0 in release builds).
    func waiting(for key: Key) -> Int {
        inFlight.withLock { $0[key]?.waiters.count ?? 0 }
    }
}

import Synchronization

/// Catches a task that leases a second connection of a pool while it holds one (debug builds).
///
/// A transaction that waits for a second connection of its own pool deadlocks until the
/// operation timeout once such transactions hold every connection: one does with a pool of one,
/// N do with N (a re-seal batch that looked its keys up inside its transaction did, in CI). In
/// debug builds — the ones the test suite runs — such a lease fails at once with
/// ``StorageError/configuration(_:)`` naming both contexts. Nesting on purpose goes through
/// ``Database/withNestingTransaction(context:_:)``, which also bounds how many do it at once
/// (carrying out a key destruction); tests that race a write from inside its transaction use
/// ``Database/allowingSecondConnection(_:)``. Only the leases made directly in such a body are
/// allowed: theirs are checked again. Release builds skip the check: a nesting the suite never
/// reached should keep its chance to finish, not fail at once in production.
///
/// A ``SingleFlight`` refresh runs in a task of its own for every caller that waits for it, so
/// a caller that holds a lease and joins a refresh someone else started waits, through it, for a
/// second connection too: the refresh's leases are also checked against the leases its waiters
/// hold (``FlightWaiters``). A waiter that joins after the refresh's check is not caught.
struct HeldLeases: Sendable {
    /// The pools (by identity) this task, or the task that started it, holds a connection of,
    /// with the context each lease named.
    var held: [(pool: ObjectIdentifier, context: String)] = []
    var secondConnectionAllowed = false
    /// The callers waiting for each ``SingleFlight`` refresh this task runs in.
    var flights: [FlightWaiters] = []
}

/// The leases held by the callers waiting for one ``SingleFlight`` refresh (debug builds), and
/// the flights those callers are refreshes of: their waiters wait for this refresh too.
final class FlightWaiters: Sendable {
    private struct Waiter {
        let held: [(pool: ObjectIdentifier, context: String)]
        let flights: [FlightWaiters]
    }

    private let waiting = Mutex((next: 0, waiters: [Int: Waiter]()))

    /// Records a caller's leases while it waits (none when it may take a second connection on
    /// purpose, see ``Database/allowingSecondConnection(_:)``). - Returns: its ticket for
    /// ``leave(_:)``.
    func join(_ leases: HeldLeases) -> Int {
        let waiter = Waiter(held: leases.secondConnectionAllowed ? [] : leases.held, flights: leases.flights)
        return waiting.withLock { state in
            state.next += 1
            state.waiters[state.next] = waiter
            return state.next
        }
    }

    func leave(_ ticket: Int) {
        _ = waiting.withLock { $0.waiters.removeValue(forKey: ticket) }
    }

    /// Callers waiting now (tests use it to line a waiter up with a refresh).
    var count: Int { waiting.withLock { $0.waiters.count } }

    /// The context of a lease of `pool` held by a waiter, or by a waiter of a flight a waiter is
    /// the refresh of.
    func holder(of pool: ObjectIdentifier) -> String? {
        var visited = Set<ObjectIdentifier>()
        return holder(of: pool, visited: &visited)
    }

    private func holder(of pool: ObjectIdentifier, visited: inout Set<ObjectIdentifier>) -> String? {
        // Flights that wait for each other in a circle deadlock anyway; the walk must still end.
        guard visited.insert(ObjectIdentifier(self)).inserted else { return nil }
        let waiters = waiting.withLock { Array($0.waiters.values) }
        if let lease = waiters.lazy.flatMap(\.held).first(where: { $0.pool == pool }) { return lease.context }
        for flight in waiters.flatMap(\.flights) {
            if let context = flight.holder(of: pool, visited: &visited) { return context }
        }
        return nil
    }
}

extension Database {
    @TaskLocal static var leases = HeldLeases()

    /// Runs `body`, whose leases may be made while this task holds a connection of the same pool
    /// (see ``HeldLeases``): for tests that nest on purpose. The service's own code nests only
    /// through ``withNestingTransaction(context:_:)``, which also bounds it.
    static func allowingSecondConnection<Result: Sendable>(
        _ body: @Sendable () async throws -> Result
    ) async throws -> Result {
        var leases = Self.leases
        leases.secondConnectionAllowed = true
        return try await $leases.withValue(leases) { try await body() }
    }

    /// Fails a lease of `context` made while this task holds a connection of the same pool.
    func checkNotNested(_ context: String) throws {
        #if DEBUG
        let leases = Self.leases
        guard !leases.secondConnectionAllowed else { return }
        let pool = ObjectIdentifier(self)
        if let outer = leases.held.first(where: { $0.pool == pool }) {
            let reason = "\"\(context)\" would wait for a second connection while \"\(outer.context)\" holds one of the same pool"
            logger.error("nested database lease", metadata: ["outer": "\(outer.context)", "inner": "\(context)"])
            throw StorageError.configuration(reason)
        }
        if let waiter = leases.flights.lazy.compactMap({ $0.holder(of: pool) }).first {
            let reason = "\"\(context)\", a shared refresh, would wait for a connection while \"\(waiter)\", waiting for that refresh, holds one of the same pool"
            logger.error("nested database lease", metadata: ["outer": "\(waiter)", "inner": "\(context)"])
            throw StorageError.configuration(reason)
        }
        #endif
    }

    /// Runs `body` recorded as holding a connection of this pool for `context`.
    func holdingLease<Result: Sendable>(
        _ context: String, _ body: () async throws -> Result
    ) async throws -> Result {
        #if DEBUG
        var leases = Self.leases
        leases.held.append((ObjectIdentifier(self), context))
        leases.secondConnectionAllowed = false
        return try await Self.$leases.withValue(leases) { try await body() }
        #else
        return try await body()
        #endif
    }
}

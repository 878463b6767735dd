import Foundation
@testable import Storage
import Testing

/// A transaction that waits for a second connection of its own pool deadlocks until the
/// operation timeout once such transactions hold every connection (see `HeldLeases`). The test
/// suite runs debug builds, where such a lease fails at once.
@Suite("Nested database leases")
struct NestedLeaseCheckTests {
    /// A started service client; the operation timeout generous, since the first connections of
    /// a run wait behind every suite's set-up (seen: 30 s).
    static func client(connections: Int? = nil, operationTimeout: Duration = .seconds(240)) throws -> Database {
        var configuration = try PostgresSettings.load().configuration(role: .service, schema: "custos")
        if let connections { configuration.maximumConnections = connections }
        configuration.operationTimeout = operationTimeout
        let database = try Database(configuration: configuration, logger: LogCaptureHolder.logger)
        database.start()
        return database
    }

    /// Starts `flight`'s refresh of `key`, which runs `body` once a second caller waits for it;
    /// returns the starter's task once the starter waits.
    static func refresh(
        _ flight: SingleFlight<String, Int>, _ key: String, _ body: @escaping @Sendable () async throws -> Int
    ) async throws -> Task<Int, any Error> {
        let starter = Task {
            try await flight.run(key) {
                while flight.waiting(for: key) < 2 { try await Task.sleep(for: .milliseconds(5)) }
                return try await body()
            }
        }
        while flight.waiting(for: key) < 1 { try await Task.sleep(for: .milliseconds(5)) }
        return starter
    }

    static let debugBuild: Bool = {
        #if DEBUG
        true
        #else
        false
        #endif
    }()

    @Test(
        "A lease made while the same task holds one of the same pool fails at once, naming both; allowed on purpose, or on another pool, it runs",
        .enabled(if: debugBuild, "release builds skip the check")
    )
    func nestedLeaseRefused() async throws {
        let (database, other) = (try Self.client(connections: 1), try Self.client())
        let refusal = StorageError.configuration("\"inner\" would wait for a second connection while \"outer\" holds one of the same pool")
        // With one connection this waited for itself until the operation timeout.
        await #expect(throws: refusal) {
            try await database.withTransaction(context: "outer") { _ in try await database.withTransaction(context: "inner") { _ in } }
        }
        // A task started inside a lease counts as its starter.
        await #expect(throws: refusal) {
            try await database.withTransaction(context: "outer") { _ in
                try await Task { try await database.withConnection(context: "inner") { _ in } }.value
            }
        }
        let selectOne = { @Sendable (connection: DatabaseTransaction) async throws -> Int in
            try await connection.query("SELECT 1", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        // Another pool's connection: nothing to wait for.
        #expect(try await database.withTransaction(context: "outer") { _ in try await other.withTransaction(context: "inner", selectOne) } == 1)
        // On purpose, on a pool of several.
        #expect(try await other.withTransaction(context: "outer") { _ in
            try await Database.allowingSecondConnection { try await other.withTransaction(context: "inner", selectOne) }
        } == 1)
        // Allowed are the leases made directly in the body: theirs are checked again.
        await #expect(throws: StorageError.configuration("\"innermost\" would wait for a second connection while \"outer\" holds one of the same pool")) {
            try await other.withTransaction(context: "outer") { _ in
                try await Database.allowingSecondConnection {
                    try await other.withTransaction(context: "inner") { _ in try await other.withTransaction(context: "innermost") { _ in } }
                }
            }
        }
        // One after the other is no nesting.
        #expect(try await database.withTransaction(context: "first", selectOne) == 1)
        #expect(try await database.withTransaction(context: "second", selectOne) == 1)
        await database.shutdown()
        await other.shutdown()
    }

    @Test(
        "A caller holding a connection that waits for a shared refresh (SingleFlight) someone else started, which needs a connection of the same pool, fails at once",
        .enabled(if: debugBuild, "release builds skip the check")
    )
    func waiterOfSharedRefreshRefused() async throws {
        // One connection: held by the waiter, wanted by the refresh it waits for. Without the
        // check both waited until the operation timeout.
        let database = try Self.client(connections: 1, operationTimeout: .seconds(60))
        let flight = SingleFlight<String, Int>()
        let starter = try await Self.refresh(flight, "k") { try await database.withTransaction(context: "refresh") { _ in 1 } }
        let refusal = StorageError.configuration(
            "\"refresh\", a shared refresh, would wait for a connection while \"holder\", waiting for that refresh, holds one of the same pool"
        )
        await #expect(throws: refusal) {
            try await database.withTransaction(context: "holder") { _ in try await flight.run("k") { 0 } }
        }
        await #expect(throws: refusal) { try await starter.value }
        // A waiter without a connection is no nesting.
        #expect(try await flight.run("k") { try await database.withTransaction(context: "refresh") { _ in 2 } } == 2)
        await database.shutdown()
    }

    @Test(
        "The waiter's connection is found through a refresh that waits for another refresh; a waiter allowed a second connection on purpose is no nesting",
        .enabled(if: debugBuild, "release builds skip the check")
    )
    func waiterOfChainedRefreshRefused() async throws {
        let database = try Self.client(connections: 1, operationTimeout: .seconds(60))
        let (outer, inner) = (SingleFlight<String, Int>(), SingleFlight<String, Int>())
        // The inner refresh leases once the outer refresh waits for it; the outer refresh joins
        // once the holder waits for it.
        let innerStarter = try await Self.refresh(inner, "b") { try await database.withTransaction(context: "inner refresh") { _ in 1 } }
        let outerStarter = try await Self.refresh(outer, "a") { try await inner.run("b") { 0 } }
        let refusal = StorageError.configuration(
            "\"inner refresh\", a shared refresh, would wait for a connection while \"holder\", waiting for that refresh, holds one of the same pool"
        )
        await #expect(throws: refusal) {
            try await database.withTransaction(context: "holder") { _ in try await outer.run("a") { 0 } }
        }
        await #expect(throws: refusal) { try await outerStarter.value }
        await #expect(throws: refusal) { try await innerStarter.value }
        await database.shutdown()

        let two = try Self.client(connections: 2)
        let flight = SingleFlight<String, Int>()
        let starter = try await Self.refresh(flight, "k") { try await two.withTransaction(context: "refresh") { _ in 3 } }
        #expect(try await two.withTransaction(context: "holder") { _ in
            try await Database.allowingSecondConnection { try await flight.run("k") { 0 } }
        } == 3)
        #expect(try await starter.value == 3)
        await two.shutdown()
    }

    @Test("A transaction that needs two connections is refused at once inside another of its pool's (it would wait for its own turn) and on a pool of one; on another pool it runs")
    func nestingTransactionRefusals() async throws {
        let (database, other, third) = (try Self.client(connections: 1), try Self.client(), try Self.client())
        await #expect(throws: StorageError.configuration("one needs two connections at once; the pool has 1")) {
            try await database.withNestingTransaction(context: "one") { _ in }
        }
        await #expect(throws: StorageError.configuration(
            "inner would wait for its own turn: it runs inside another transaction of this pool that needs two connections"
        )) {
            try await other.withNestingTransaction(context: "outer") { _ in try await other.withNestingTransaction(context: "inner") { _ in } }
        }
        // Its turn was given back: the next one runs, and may nest another pool's.
        #expect(try await other.withNestingTransaction(context: "outer") { _ in
            try await third.withNestingTransaction(context: "inner") { connection in
                try await connection.query("SELECT 1", logger: Database.quiet).collect().first!.decode(Int.self)
            }
        } == 1)
        for client in [database, other, third] { await client.shutdown() }
    }
}

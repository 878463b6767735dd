import HSMTestSupport
import PostgresNIO
@testable import Storage
import Testing

@Suite("Database calls their caller cancels")
struct DatabaseCancellationTests {
    @Test("A transaction whose caller is cancelled throws CancellationError, not \"database unavailable\"")
    func callerCancelled() async throws {
        let database = try NestedLeaseCheckTests.client()
        let call = Task {
            try await database.withTransaction(context: "test: cancelled") { connection in
                try await connection.query("SELECT pg_sleep(30)", logger: Database.quiet)
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        call.cancel()
        let started = ContinuousClock.now
        let result = await call.result
        #expect(ContinuousClock.now - started < .seconds(10), "the caller waited for the statement")
        #expect(throws: CancellationError.self) { try result.get() }
        await database.shutdown()
    }
}

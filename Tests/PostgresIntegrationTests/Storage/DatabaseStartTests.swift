import HSMTestSupport
import PostgresNIO
@testable import Storage
import Testing

@Suite("Database start-up")
struct DatabaseStartTests {
    @Test("A statement right after start() finds the pool running: PostgresNIO logs no \"run() hasn't been called\" warning")
    func leaseRightAfterStart() async throws {
        // Before, about every other local command's first statement raced the pool's start.
        for _ in 0..<10 {
            let logs = LogCapture()
            var configuration = try PostgresSettings.load().configuration(role: .service, schema: "custos")
            configuration.operationTimeout = .seconds(240)
            let database = try Database(configuration: configuration, logger: logs.logger)
            database.start()
            let answer = try await database.withConnection(context: "test: first statement") { connection in
                try await connection.query("SELECT 1", logger: Database.quiet).collect().first!.decode(Int.self)
            }
            await database.shutdown()
            #expect(answer == 1)
            #expect(!logs.text.contains("hasn't been called"), "\(logs.text)")
        }
    }
}

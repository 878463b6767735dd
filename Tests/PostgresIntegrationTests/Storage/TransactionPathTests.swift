import CustosModel
import PostgresNIO
@testable import Storage
import Testing

/// What a data-plane transaction costs the service and PostgreSQL besides its own statements
/// (issue 12): where its body runs, and which statements PostgreSQL keeps planned.
@Suite("Storage: the transaction path (event loop, prepared statements)")
struct TransactionPathTests {
    @Test("A transaction's body runs on the event loop of its connection (no thread hop per statement)")
    func bodyRunsOnTheConnectionsEventLoop() async throws {
        let harness = try await CustodyHarness.make("txloop")
        let tenant = try await harness.keyring.createTenant(label: "tenant-a", actor: "test")
        let onLoop = try await harness.service.withTenant(tenant.id, context: "test") { connection in
            // Before the first statement and after one: the answer resumes the body on the loop.
            let before = connection.connection.eventLoop.inEventLoop
            try await connection.query("SELECT 1", logger: Database.quiet)
            return (before, connection.connection.eventLoop.inEventLoop)
        }
        #expect(onLoop.0)
        #expect(onLoop.1)
        await harness.shutdown()
    }

    @Test("The tenant scope, BEGIN and COMMIT are statements prepared once per connection; the scope is still transaction-local")
    func tenantScopePreparedOncePerConnection() async throws {
        let harness = try await CustodyHarness.make("txprep")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "test")
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "test")
        var configuration = harness.settings.configuration(role: .service, schema: harness.schema)
        configuration.maximumConnections = 1
        let database = try Database(configuration: configuration, logger: LogCaptureHolder.logger)
        database.start()
        let scopes = try await [a.id, b.id, a.id].asyncMap { tenant in
            try await database.withTenant(tenant, context: "test") { connection in
                try await connection.query("SELECT current_setting('app.tenant_id')", logger: Database.quiet).collect().first!.decode(String.self)
            }
        }
        #expect(scopes == [a.id.rawValue, b.id.rawValue, a.id.rawValue])
        let prepared = try await database.withTransaction(context: "test") { connection in
            try await connection.query(
                "SELECT count(*)::int FROM pg_prepared_statements WHERE name = \(SetTenant.name)", logger: Database.quiet
            ).collect().first!.decode(Int.self)
        }
        #expect(prepared == 1)
        // BEGIN and COMMIT too: PostgreSQL no longer parses them on every transaction.
        let transactionControl = try await database.withTransaction(context: "test") { connection in
            try await connection.query(
                "SELECT count(*)::int FROM pg_prepared_statements WHERE name = ANY(\([Begin.name, Commit.name]))", logger: Database.quiet
            ).collect().first!.decode(Int.self)
        }
        #expect(transactionControl == 2)
        // Outside a tenant transaction the scope is gone again (set_config(…, true)).
        let unscoped = try await database.withTransaction(context: "test") { connection in
            try await connection.query("SELECT current_setting('app.tenant_id', true)", logger: Database.quiet).collect().first!.decode(String?.self)
        }
        #expect(unscoped ?? "" == "")
        await database.shutdown()
        await harness.shutdown()
    }
}

private extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result = [T]()
        for element in self { result.append(try await transform(element)) }
        return result
    }
}

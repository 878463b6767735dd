import Custody
import CustosModel
import PostgresNIO
@testable import Storage
import Testing

@Suite("Storage: migrations and row-level security")
struct RowLevelSecurityTests {
    @Test("With tenant A in scope, a query without WHERE sees none of B's rows, an INSERT for B is refused, no tenant sees nothing")
    func tenantIsolation() async throws {
        let harness = try await CustodyHarness.make("rls")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "test")
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "test")

        let seenByA = try await harness.service.withTenant(a.id, context: "test") { connection in
            try await connection.query("SELECT tenant_id::text FROM key_versions", logger: Database.quiet).collect().map { try $0.decode(String.self) }
        }
        #expect(seenByA.count == KeyPurpose.createdWithTenant.count)
        #expect(Set(seenByA) == [a.id.rawValue])

        // Writing a row for B while A is in scope.
        await #expect(throws: StorageError.permissionDenied("test insert")) {
            try await harness.service.withTenant(a.id, context: "test insert") { connection in
                try await connection.query("""
                    INSERT INTO key_versions (tenant_id, purpose, version, state, wrapped_key, wrap_mechanism, root_kek_version, check_value, row_mac)
                    VALUES (\(b.id.rawValue)::uuid, 'pii', 99, 'retired', '\\x00'::bytea, 'x', 1, '\\x00'::bytea, '\\x00'::bytea)
                    """, logger: Database.quiet)
            }
        }
        // Updating B's rows while A is in scope changes nothing.
        let updated = try await harness.service.withTenant(a.id, context: "test update") { connection in
            try await connection.query("UPDATE key_versions SET state = 'retired' WHERE tenant_id = \(b.id.rawValue)::uuid RETURNING version", logger: Database.quiet).collect().count
        }
        #expect(updated == 0)
        // No tenant in scope (a pooled connection's reset value is ''): nothing at all.
        let unscoped = try await harness.service.withTransaction(context: "test") { connection in
            try await connection.query("SELECT count(*)::int FROM key_versions", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(unscoped == 0)
        let resetScope = try await harness.service.withTransaction(context: "test") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', '', true)", logger: Database.quiet)
            return try await connection.query("SELECT count(*)::int FROM api_keys", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(resetScope == 0)
        await harness.shutdown()
    }

    @Test("The service role cannot turn row-level security off, nor rewrite the audit log")
    func serviceRoleCannotDisable() async throws {
        let harness = try await CustodyHarness.make("rlsoff")
        for statement in [
            "ALTER TABLE key_versions DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY",
            "DROP POLICY tenant_isolation ON api_keys",
        ] {
            await #expect(throws: StorageError.self, "\(statement)") {
                try await harness.service.withTransaction(context: "test") { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: Database.quiet)
                }
            }
        }
        _ = try await harness.audit.append(tenant: nil, actor: "test", action: .certificateRevoke, target: "x", details: [:])
        for statement in ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"] {
            await #expect(throws: StorageError.permissionDenied("test")) {
                try await harness.service.withTransaction(context: "test") { connection in
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: Database.quiet)
                }
            }
        }
        await harness.shutdown()
    }

    @Test("An operation cut off by its timeout leaves no half-written record and no open transaction behind")
    func timeoutRollsBack() async throws {
        let harness = try await CustodyHarness.make("timeout")
        let database = try harness.secondServiceDatabase(maximumConnections: 1, operationTimeout: .seconds(1))
        let id = TenantID.random()
        do {
            _ = try await database.withTransaction(context: "slow insert") { connection in
                try await connection.query("INSERT INTO tenants (id, label, status) VALUES (\(id.rawValue)::uuid, 'half-written', 'active')", logger: Database.quiet)
                try await connection.query("SELECT pg_sleep(2)", logger: Database.quiet)
            }
            Issue.record("expected the operation timeout")
        } catch let error as StorageError {
            #expect(error.isRetryable, "\(error)")
        }
        // The only pooled connection serves the next operation outside any transaction.
        var next: Int?
        // Each try has the 1 s timeout too: at suite start-up (one CI run) 20 were not enough.
        for _ in 0..<100 where next == nil {
            next = try? await database.withTransaction(context: "count") { connection in
                try await connection.query("SELECT count(*)::int FROM tenants WHERE label = 'half-written'", logger: Database.quiet)
                    .collect().first!.decode(Int.self)
            }
            if next == nil { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(next == 0, "the cut-off insert was rolled back")
        await database.shutdown()
        await harness.shutdown()
    }

    @Test("Migrations are idempotent and recorded")
    func migrationsIdempotent() async throws {
        let harness = try await CustodyHarness.make("migrate")
        let again = try await Migrations.migrate(harness.owner, serviceRole: harness.settings.serviceUser, logger: harness.logs.logger)
        #expect(again.isEmpty)
        await harness.shutdown()
    }

    @Test("The service refuses a schema older than its build and names the command that fixes it; a current one passes")
    func schemaBehindTheBuild() async throws {
        let harness = try await CustodyHarness.make("schema_behind")
        try await Migrations.requireCurrent(harness.service)
        _ = try await harness.owner.withTransaction(context: "test") { connection in
            try await connection.query("DELETE FROM schema_migrations WHERE version = \(Migrations.latestVersion)", logger: Database.quiet)
        }
        do {
            try await Migrations.requireCurrent(harness.service)
            Issue.record("a schema one migration behind was accepted")
        } catch let error as StorageError {
            // The version before the newest (helpers' branches may leave a gap the merge closes).
            let previous = Migrations.all.map(\.version).sorted().dropLast().last ?? 0
            #expect("\(error)".contains("is at version \(previous)"))
            #expect("\(error)".contains("custos db migrate"))
        }
        // Before migration 23 the service role could not read the table at all.
        _ = try await harness.owner.withTransaction(context: "test") { connection in
            try await connection.query("REVOKE SELECT ON schema_migrations FROM \(unescaped: harness.settings.serviceUser)", logger: Database.quiet)
        }
        do {
            try await Migrations.requireCurrent(harness.service)
            Issue.record("an unreadable schema version was accepted")
        } catch let error as StorageError {
            #expect("\(error)".contains("custos db migrate"))
        }
        await harness.shutdown()
    }

    @Test("A database that cannot be reached answers 'unavailable' (retryable), not a hang or a crash")
    func unreachable() async throws {
        var configuration = try PostgresSettings.load().configuration(role: .service, schema: "custos")
        configuration.socketPath = "/nonexistent/.s.PGSQL.5432"
        configuration.operationTimeout = .seconds(2)
        configuration.connectTimeout = .seconds(1)
        let database = try Database(configuration: configuration, logger: LogCaptureHolder.logger)
        database.start()
        do {
            _ = try await database.withTransaction(context: "probe") { connection in
                try await connection.query("SELECT 1", logger: Database.quiet)
            }
            Issue.record("expected unavailable")
        } catch let error as StorageError {
            #expect(error.isRetryable, "\(error)")
        }
        await database.shutdown()
    }
}

import HSMTestSupport
enum LogCaptureHolder {
    static let logger = LogCapture().logger
}

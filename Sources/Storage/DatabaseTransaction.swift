public import CustosModel
import Logging
import PostgresNIO

/// The open transaction (or, from ``Database/withConnection(context:_:)``, the leased connection)
/// a ``Database`` scope lends its body: what every store function runs on.
///
/// Other modules only pass it along to store functions. The PostgreSQL connection inside and the
/// forwarding `query` are internal: `package` would let every target of the package (Verification,
/// Custody, the executables) run raw SQL past the stores and their row-level-security context.
/// The integration tests that read tables directly reach them with `@testable import Storage`
/// (scripts/check-imports refuses `@testable` outside Tests/).
public struct DatabaseTransaction: Sendable {
    let connection: PostgresConnection

    init(_ connection: PostgresConnection) {
        self.connection = connection
    }

    /// Scopes the rest of this transaction to `tenant` (as ``Database/withTenant(_:context:timeout:_:)``
    /// does at its start), for a step that changes administration rows and one tenant's rows
    /// in one transaction (approving a scheduled key destruction).
    public func scope(to tenant: TenantID) async throws {
        for try await _ in try await execute(SetTenant(tenant: tenant)) {}
    }

    /// Runs a statement whose rows nobody reads (a lock, a NOTIFY) to its end. A SELECT's
    /// failure arrives after its row description, with the rows: a caller that dropped the row
    /// sequence would not see a lock wait cancelled by `statement_timeout`, and would go on in
    /// an aborted transaction (every later statement failing 25P02, the cause lost).
    func run(_ query: PostgresQuery, file: String = #fileID, line: Int = #line) async throws {
        for try await _ in try await connection.query(query, logger: Database.quiet, file: file, line: line) {}
    }

    /// Runs one statement on the connection (interpolated values become binds).
    @discardableResult
    func query(
        _ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger, file: file, line: line)
    }
}

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

    /// Scopes the rest of this transaction to `tenant` (as ``Database/withTenant(_:context:_:)``
    /// does at its start), for a step that changes administration rows and one tenant's rows
    /// in one transaction (approving a scheduled key destruction).
    public func scope(to tenant: TenantID) async throws {
        _ = try await execute(SetTenant(tenant: tenant))
    }

    /// Runs one statement on the connection (interpolated values become binds).
    @discardableResult
    func query(
        _ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger, file: file, line: line)
    }
}

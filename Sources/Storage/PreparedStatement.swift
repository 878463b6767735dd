import Logging
import PostgresNIO

/// A data-plane statement PostgreSQL parses and plans once per connection (a PostgresNIO named
/// prepared statement) instead of on every call: the profile of issue 12 found PostgreSQL's
/// time per Enrol and Verify in per-statement overhead (parse, analysis, planning), not in
/// execution. Rows come back undecoded; the store decodes them as it did before.
///
/// Only for statements whose first use on a connection cannot fail for a reason that passes:
/// PostgresNIO keeps a failed preparation for the life of the connection. Preparation happens
/// at a transaction's first use of the statement, after BEGIN and `set_config`; a transaction
/// stops at its first failed statement, so none is prepared inside an aborted transaction.
///
/// Each declares its binds' types (`bindingDataTypes`, those of the Swift values it binds):
/// left to infer them from the SQL, PostgreSQL would take an `integer` column's type for a
/// parameter and refuse the 8-byte binary integer PostgresNIO sends for an `Int`.
protocol PreparedStatement: PostgresPreparedStatement where Row == PostgresRow {
    /// Named here, not by PostgresNIO's default (`String(reflecting:)` on every execution).
    static var name: String { get }
}

extension PreparedStatement {
    func decodeRow(_ row: PostgresRow) throws -> PostgresRow { row }
}

extension DatabaseTransaction {
    /// Runs a prepared statement (its binds are its stored properties).
    func execute<Statement: PreparedStatement>(
        _ statement: Statement, file: String = #fileID, line: Int = #line
    ) async throws -> AsyncThrowingMapSequence<PostgresRowSequence, PostgresRow> {
        try await connection.execute(statement, logger: Database.quiet, file: file, line: line)
    }
}

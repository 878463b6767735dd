package import Logging
package import PostgresNIO

/// The open transaction (or, from ``Database/withConnection(context:_:)``, the leased connection)
/// a ``Database`` scope lends its body: what every store function runs on.
///
/// Other modules only pass it along to store functions; the PostgreSQL connection inside is
/// visible to this package's Storage and test code only, so nothing outside Storage imports
/// PostgresNIO and SQL stays in Storage.
public struct DatabaseTransaction: Sendable {
    package let connection: PostgresConnection

    package init(_ connection: PostgresConnection) {
        self.connection = connection
    }

    /// Runs one statement on the connection (interpolated values become binds).
    @discardableResult
    package func query(
        _ query: PostgresQuery, logger: Logger, file: String = #fileID, line: Int = #line
    ) async throws -> PostgresRowSequence {
        try await connection.query(query, logger: logger, file: file, line: line)
    }
}

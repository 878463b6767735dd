/// How to reach PostgreSQL: a unix socket (the local cluster listens on nothing else), a role
/// and its password, and the schema that holds Custos' tables.
public struct DatabaseConfiguration: Sendable {
    /// Path of the socket file, `<socket directory>/.s.PGSQL.<port>`.
    public var socketPath: String
    public var database: String
    public var username: String
    /// PostgresNIO takes the password as a `String`; it is read from a 0600 file.
    public var password: String
    /// Schema of the tables (tests use a fresh one each). Lower-case letters, digits, `_`.
    public var schema: String
    public var maximumConnections: Int
    /// The pool size unless configured (`postgres.maximumConnections`): see docs/operations.md.
    public static let defaultMaximumConnections = 10
    public var connectTimeout: Duration
    /// How long a statement may run before the server cancels it.
    public var statementTimeout: Duration
    /// How long one database operation (lease + statements) may take before ``StorageError/unavailable(_:)``: the pool would otherwise wait for a down server indefinitely.
    public var operationTimeout: Duration
    /// What `pg_stat_activity` shows for these connections (`application_name`): tests name
    /// their schema's, so a check of who waits on a lock sees only its own backends.
    public var applicationName = "custos"

    public init(
        socketDirectory: String, port: Int = 5432, database: String, username: String, password: String,
        schema: String = "custos", maximumConnections: Int = DatabaseConfiguration.defaultMaximumConnections, connectTimeout: Duration = .seconds(3),
        statementTimeout: Duration = .seconds(8), operationTimeout: Duration = .seconds(10)
    ) {
        socketPath = "\(socketDirectory)/.s.PGSQL.\(port)"
        self.database = database
        self.username = username
        self.password = password
        self.schema = schema
        self.maximumConnections = maximumConnections
        self.connectTimeout = connectTimeout
        self.statementTimeout = statementTimeout
        self.operationTimeout = operationTimeout
    }

    /// Schema names are interpolated into SQL (DDL has no bind parameters), so only a safe
    /// identifier is accepted.
    func validatedSchema() throws -> String {
        let allowed = schema.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
        guard allowed, let first = schema.utf8.first, first >= 0x61 && first <= 0x7A, schema.utf8.count <= 48 else {
            throw StorageError.configuration("schema name must be lower-case letters, digits and _ (got \(schema.count) chars)")
        }
        return schema
    }
}

import PostgresNIO

/// BEGIN and COMMIT, prepared once per connection (``PreparedStatement``): every transaction
/// sends both, and sent as unnamed statements PostgreSQL parsed them and built a plan-cache
/// entry for each on every transaction — per-statement overhead that the profile of issue 12
/// found to be most of PostgreSQL's time per Enrol and Verify.
///
/// Preparing either cannot fail for a reason that passes (``PreparedStatement``): BEGIN is
/// prepared on a connection between transactions, and PostgreSQL accepts a transaction's exit
/// statements (COMMIT among them) even in a transaction a failed statement has aborted.
struct Begin: PreparedStatement {
    static let name = "custos_begin"
    static let sql = "BEGIN"
    static let bindingDataTypes: [PostgresDataType] = []

    func makeBindings() -> PostgresBindings { PostgresBindings() }
}

/// See ``Begin``.
struct Commit: PreparedStatement {
    static let name = "custos_commit"
    static let sql = "COMMIT"
    static let bindingDataTypes: [PostgresDataType] = []

    func makeBindings() -> PostgresBindings { PostgresBindings() }
}

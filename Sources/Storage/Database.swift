public import CustosModel
public import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// A pooled PostgreSQL client for one role and one schema.
///
/// Every tenant-scoped statement runs inside ``withTenant(_:_:)``: a transaction that first sets
/// `app.tenant_id` with `set_config(…, true)` (transaction-local), which the row-level security
/// policies read — or is a call of a function that sets it first, sent on its own
/// (``withConnection(context:_:)``, ``withAutocommit(context:_:)``: Enrol's and Verify's).
/// Statements that start without a tenant (index tables, the audit log, tenant
/// administration) use ``withTransaction(_:)``.
public final class Database: Sendable {
    public let configuration: DatabaseConfiguration
    let client: PostgresClient
    /// LISTEN connections are held for the life of the process: they come from a pool of their
    /// own, so listeners never take the connections work needs. (Sharing one pool, the three
    /// listeners of `serve` left a 4-connection pool a single connection, and a transaction that
    /// looks a key up on a second connection — a re-seal batch, a destruction — waited on itself
    /// until its timeout.)
    let listenClient: PostgresClient
    /// Listeners one process runs at most at once (API-key revocations, galleries, key states,
    /// and room for tests that run a second one).
    static let maximumListeners = 8
    let logger: Logger
    public let schema: String
    private let runner = Mutex<Task<Void, Never>?>(nil)
    /// Transactions this client committed, in total and by the context their scope named: what
    /// a data-plane call costs PostgreSQL (each commit of a writing transaction is a WAL flush),
    /// read by the metrics endpoint, the benchmarks and the one-commit-per-call tests.
    public let commits = CommitCounter()
    /// Transactions that need a second connection of a pool: one at a time per pool (keyed by
    /// the client's identity).
    static let nestingTurns = KeyedSerializer<ObjectIdentifier>()

    public init(configuration: DatabaseConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        schema = try configuration.validatedSchema()
        var clientConfiguration = PostgresClient.Configuration(
            unixSocketPath: configuration.socketPath, username: configuration.username,
            password: configuration.password, database: configuration.database
        )
        clientConfiguration.options.maximumConnections = configuration.maximumConnections
        clientConfiguration.options.connectTimeout = configuration.connectTimeout
        let statementMilliseconds = configuration.statementTimeout.components.seconds * 1000
            + configuration.statementTimeout.components.attoseconds / 1_000_000_000_000_000
        clientConfiguration.options.additionalStartupParameters = [
            ("search_path", schema),
            ("statement_timeout", String(statementMilliseconds)),
            ("application_name", configuration.applicationName),
        ]
        client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
        var listenConfiguration = clientConfiguration
        listenConfiguration.options.maximumConnections = Self.maximumListeners
        listenClient = PostgresClient(configuration: listenConfiguration, backgroundLogger: logger)
    }

    /// Starts the connection pool. Connections are made on demand and re-made after the
    /// server comes back.
    public func start() {
        runner.withLock { task in
            guard task == nil else { return }
            let (client, listenClient) = (self.client, self.listenClient)
            // Immediate tasks: each `run()` marks its client running before `start()` returns.
            // A lease made right after start() (every local command's first statement) found it
            // not yet running about every other time, and PostgresNIO warned an operator that
            // "run() hasn't been called yet".
            let running = Task.immediate { await client.run() }
            let listening = Task.immediate { await listenClient.run() }
            task = Task {
                await withTaskCancellationHandler {
                    await running.value
                    await listening.value
                } onCancel: {
                    running.cancel()
                    listening.cancel()
                }
            }
        }
    }

    /// Closes every connection.
    public func shutdown() async {
        let task = runner.withLock { task -> Task<Void, Never>? in
            defer { task = nil }
            return task
        }
        task?.cancel()
        await task?.value
    }

    /// A transaction scoped to `tenant`: row-level security shows and accepts only its rows.
    /// - Parameter timeout: how long it may take, when not the configured operation timeout (a
    ///   maintenance step over a whole tenant).
    /// - Throws: ``StorageError``.
    public func withTenant<Result: Sendable>(
        _ tenant: TenantID, context: String, timeout: Duration? = nil,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        try await transaction(context: context, released: nil, timeout: timeout) { connection in
            try await connection.scope(to: tenant)
            return try await body(connection)
        }
    }

    /// A transaction with no tenant set: row-level-security tables show nothing in it.
    /// - Throws: ``StorageError``.
    public func withTransaction<Result: Sendable>(
        context: String,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        try await transaction(context: context, released: nil, timeout: nil, body)
    }

    /// ``withTransaction(context:_:)``, calling `released` once its connection is back in the
    /// pool.
    private func transaction<Result: Sendable>(
        context: String, released: (@Sendable () -> Void)?, timeout: Duration?,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        try await leased(context: context, released: released, timeout: timeout) { connection in
            for try await _ in try await connection.execute(Begin()) {}
            do {
                let result = try await body(connection)
                // A body that outlived the operation timeout has already been reported as failed
                // ("unavailable") to its caller, who may retry: commit nothing then.
                try Task.checkCancellation()
                for try await _ in try await connection.execute(Commit()) {}
                self.commits.count(context)
                return result
            } catch {
                // The failure may be a cancellation (the operation timeout): a ROLLBACK issued
                // from the cancelled task could be cancelled too and leave the pooled connection
                // inside a half-done transaction (with its tenant scope) for the next lease. An
                // unstructured task is not cancelled with us.
                let logger = self.logger
                await Task { _ = try? await connection.query("ROLLBACK", logger: logger) }.value
                throw error
            }
        }
    }

    /// A transaction whose body also runs transactions of its own on this pool, so it holds two
    /// connections at once: carrying out a key destruction keeps the request's row locked while
    /// the keyring writes. One runs at a time per pool, admitted before it takes its first
    /// connection, so its inner leases find one free once other work gives one back (two on a
    /// pool of two held one each and waited for the other's until the operation timeout; more at
    /// once gain nothing — the keyring's destruction steps are serialised by an advisory lock —
    /// and would take connections from Enrol and Verify). The turn is given back when the
    /// connection is, not when the caller stops waiting (an abandoned body may still hold it).
    /// - Throws: ``StorageError/configuration(_:)`` with fewer than two connections, or inside
    ///   another of this pool's nesting transactions (it would wait for its own turn);
    ///   ``StorageError``.
    public func withNestingTransaction<Result: Sendable>(
        context: String,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        guard configuration.maximumConnections >= 2 else {
            throw StorageError.configuration("\(context) needs two connections at once; the pool has \(configuration.maximumConnections)")
        }
        let pool = ObjectIdentifier(self)
        guard !Self.nestingPools.contains(pool) else {
            throw StorageError.configuration("\(context) would wait for its own turn: it runs inside another transaction of this pool that needs two connections")
        }
        await Self.nestingTurns.acquire(pool)
        return try await Self.$nestingPools.withValue(Self.nestingPools + [pool]) {
            try await transaction(context: context, released: { Self.nestingTurns.release(pool) }, timeout: nil) { connection in
                try await Self.allowingSecondConnection { try await body(connection) }
            }
        }
    }

    /// The pools whose nesting transaction this task (or the task that started it) is in.
    @TaskLocal static var nestingPools: [ObjectIdentifier] = []

    /// A connection outside any transaction (LISTEN, DDL, a read that is one statement).
    public func withConnection<Result: Sendable>(
        context: String,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        try await leased(context: context, body)
    }

    /// A write that is one statement, sent outside BEGIN and COMMIT: PostgreSQL runs it as a
    /// transaction of its own and commits it before answering — one round trip where a
    /// transaction takes at least four. For data-plane functions that scope themselves to their
    /// tenant (``SessionStore/completeVerificationIfOpen(_:tenant:outcome:confidence:biometricKeyVersion:at:cutoff:attemptLimit:on:)``);
    /// `body` must run exactly one statement. Counted as one commit of `context` when it returns.
    ///
    /// Unlike ``withTransaction(context:_:)`` nothing can stop the commit once the statement is
    /// sent: a statement still running at the operation timeout is reported as failed
    /// ("unavailable") and may commit afterwards. The caller is told of no write that did not
    /// happen; one that did may go unacknowledged, as when a COMMIT's answer is lost.
    public func withAutocommit<Result: Sendable>(
        context: String,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        let result = try await leased(context: context, body)
        commits.count(context)
        return result
    }

    /// Leases a connection, giving up after the operation timeout (the pool waits for the server
    /// indefinitely otherwise) and classifying every database error as a ``StorageError``;
    /// errors the body throws itself reach the caller unchanged.
    ///
    /// The work runs in its own task and the caller does not wait for it past the timeout: a
    /// query on a connection the server dropped mid-restart can hang, and a task group would wait
    /// for it (seen: a call that never answered during `pg_ctl restart`). The abandoned work is
    /// cancelled; its transaction cannot commit after the deadline (``withTransaction``).
    ///
    /// Per lease that is one task and one scheduled callback on an event loop (the deadline),
    /// and the body runs on the event loop of its connection (``EventLoopTaskExecutor``): the
    /// profile of issue 12 found a separate timer task and watcher task per transaction, and two
    /// thread hops per statement, among the service's largest costs per Enrol and Verify.
    private func leased<Result: Sendable>(
        context: String, released: (@Sendable () -> Void)? = nil, timeout: Duration? = nil,
        _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Result
    ) async throws -> Result {
        do {
            try checkNotNested(context)
        } catch {
            released?()
            throw error
        }
        let client = self.client
        let timeout = timeout ?? configuration.operationTimeout
        let outcome = OnceResult<Result>()
        let work = Task {
            // The connection is back in the pool here, also for work its caller gave up on.
            defer { released?() }
            do {
                let value = try await client.withConnection { connection in
                    try await withTaskExecutorPreference(EventLoopTaskExecutor(connection.eventLoop)) {
                        do {
                            return try await self.holdingLease(context) { try await body(DatabaseTransaction(connection)) }
                        } catch let error as PSQLError {
                            throw error
                        } catch let error as StorageError {
                            throw error
                        } catch is CancellationError {
                            throw CancellationError()
                        } catch {
                            // The caller's own refusal (e.g. "consent required"), not a database fault.
                            throw CallerError(error: error)
                        }
                    }
                }
                outcome.finish(.success(value))
            } catch {
                outcome.finish(.failure(error))
            }
        }
        let deadline = PostgresClient.defaultEventLoopGroup.any().scheduleTask(in: TimeAmount(timeout)) {
            outcome.finish(.failure(StorageError.unavailable("\(context): no answer within \(timeout)")))
            work.cancel()
        }
        let result = await withTaskCancellationHandler {
            await outcome.value
        } onCancel: {
            work.cancel()
            outcome.finish(.failure(CancellationError()))
        }
        deadline.cancel()
        switch result {
        case .success(let value):
            return value
        case .failure(let error as CallerError):
            throw error.error
        case .failure(let error as CancellationError):
            // The caller gave up (its deadline, its client): nothing is wrong with the database.
            // As "unavailable" it was logged as an outage and counted UNAVAILABLE (helper-91).
            throw error
        case .failure(let error):
            throw StorageError.from(error, context: context)
        }
    }
}

/// A result delivered once, by whichever of several tasks gets there first; the waiter is not
/// held up by the others.
private final class OnceResult<Value: Sendable>: Sendable {
    private let state = Mutex<(result: Swift.Result<Value, any Error>?, waiter: CheckedContinuation<Swift.Result<Value, any Error>, Never>?)>((nil, nil))

    func finish(_ result: Swift.Result<Value, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Swift.Result<Value, any Error>, Never>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    var value: Swift.Result<Value, any Error> {
        get async {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> Swift.Result<Value, any Error>? in
                    if let result = state.result { return result }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }
}

/// Carries an error thrown by a transaction's body past the database-error classification.
private struct CallerError: Error {
    let error: any Error
}

extension Database {
    /// Statements log nothing by default: bound values may be secret-derived.
    public static let quiet = Logger(label: "custos.storage.quiet") { _ in SwiftLogNoOpLogHandler() }
}

extension Database {
    /// Listens on `channel` for as long as the connection lives: calls `ready` once the LISTEN
    /// is in place, then `received` with each payload. Returns or throws when the connection
    /// ends (callers reconnect). Not bounded by the operation timeout: it is meant to run long.
    public func listen(
        channel: String,
        ready: @escaping @Sendable () -> Void,
        received: @escaping @Sendable (String) -> Void
    ) async throws {
        do {
            try await listenClient.withConnection { connection in
                try await connection.listen(on: channel) { notifications in
                    ready()
                    for try await notification in notifications {
                        received(notification.payload)
                    }
                }
            }
        } catch {
            throw StorageError.from(error, context: "listen on \(channel)")
        }
    }
}

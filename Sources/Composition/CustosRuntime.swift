public import Custody
import CustosModel
public import HSM
public import Logging
public import ServiceLifecycle
public import Storage

/// The one composition root: the session pool and the database as services of one
/// swift-service-lifecycle group, and the custody services over them, assembled once. `serve`,
/// every local CLI command, the benchmarks and the test harnesses start Custos through
/// ``run(_:options:services:_:)`` (or ``withPool(_:options:_:)`` / ``withDatabase(_:options:_:)``
/// when a command needs only one of the two).
public struct CustosRuntime: Sendable {
    public let custody: CustodyGraph
    public let logger: Logger
    /// Crash tests only (``Options/stepFault``): handed to the verification graph.
    let stepFault: StepFault?

    public var pool: SessionPool { custody.pool }
    public var database: Database { custody.database }
    public var audit: AuditLog { custody.audit }
    public var keyring: TenantKeyring { custody.keyring }
    public var apiKeys: APIKeyService { custody.apiKeys }
    public var webhooks: WebhookSigner { custody.webhooks }

    /// The verification side over this runtime's custody services (built on request: only
    /// `serve` and the RPC benchmark need it).
    /// - Parameter logger: the served side's logger (default: the runtime's).
    public func verification(_ settings: VerificationGraph.Settings = VerificationGraph.Settings(), logger: Logger? = nil) -> VerificationGraph {
        var settings = settings
        settings.stepFault = settings.stepFault ?? stepFault
        return VerificationGraph(custody: custody, settings: settings, logger: logger ?? self.logger)
    }

    /// Runs `body` with the runtime of `configuration`: pool started and logged in, database
    /// client running, root keys checked (unless ``Options/verifyRootKeys`` is off), custody
    /// services assembled; `services` are added to the same group after the pool and the
    /// database (so they stop before them). Everything is shut down when `body` returns or
    /// throws (``Options/Lifetime/body``), or — for a server — when the group ends on a signal
    /// (``Options/Lifetime/services``).
    /// - Throws: ``ConfigurationError``, the pool's, the database's and the root-key check's
    ///   errors, `body`'s error, or a service's.
    public static func run<R>(
        _ configuration: CustosConfiguration, options: Options,
        services: (CustosRuntime) async throws -> [ServiceGroupConfiguration.ServiceConfiguration] = { _ in [] },
        _ body: (CustosRuntime) async throws -> R
    ) async throws -> R {
        try await assemble(
            // Custody always connects as the service role, which owns nothing: the owner could
            // alter tables, turn row-level security off or rewrite the audit log. The owner is
            // for migrations only (``withDatabase(_:role:options:_:)``).
            pool: { try configuration.poolConfiguration() }, database: { try configuration.databaseConfiguration(role: .service) },
            custody: CustodyGraph.Settings(
                auditAnchorPath: configuration.auditAnchorPath, keyEnvironment: configuration.environment,
                tokenObjectsPerTenant: configuration.hsm.tokenObjectsPerTenant ?? WebhookSigner.defaultTokenObjectLimit,
                keyUseFlushInterval: configuration.keyUseFlushInterval, trustedEscrowKeys: try configuration.trustedEscrowKeys(),
                apiKeyVerifiedLifetime: configuration.apiKeyVerifiedLifetime
            ),
            options: options, services: services, body
        )
    }

    /// The same as ``run(_:options:services:_:)`` with the pool and database configurations
    /// given directly (the test harnesses: their own token and schema, their own timeouts).
    public static func run<R>(
        pool poolConfiguration: HSMConfiguration, database databaseConfiguration: DatabaseConfiguration,
        custody settings: CustodyGraph.Settings, options: Options,
        services: (CustosRuntime) async throws -> [ServiceGroupConfiguration.ServiceConfiguration] = { _ in [] },
        _ body: (CustosRuntime) async throws -> R
    ) async throws -> R {
        try await assemble(pool: { poolConfiguration }, database: { databaseConfiguration }, custody: settings, options: options, services: services, body)
    }

    /// Runs `body` with only the pool started (HSM-only commands: status, self-test, the key
    /// ceremony's steps on the token).
    public static func withPool<R>(
        _ configuration: CustosConfiguration, options: Options, _ body: (SessionPool) async throws -> R
    ) async throws -> R {
        try await withPool(try configuration.poolConfiguration(), options: options, body)
    }

    /// ``withPool(_:options:_:)`` with the pool configuration given directly.
    public static func withPool<R>(
        _ poolConfiguration: HSMConfiguration, options: Options, _ body: (SessionPool) async throws -> R
    ) async throws -> R {
        let pool = try await startedPool(poolConfiguration, options: options)
        return try await lifecycle([.init(service: SessionPoolService(pool: pool))], options: options) { try await body(pool) }
    }

    /// Runs `body` with only a database client, as `role`: migrations (the owner), and recording
    /// root-key check values after a ceremony (the service).
    public static func withDatabase<R>(
        _ configuration: CustosConfiguration, role: DatabaseRole = .service, options: Options, _ body: (Database) async throws -> R
    ) async throws -> R {
        try await withDatabase(try configuration.databaseConfiguration(role: role), options: options, body)
    }

    /// ``withDatabase(_:options:_:)`` with the database configuration given directly.
    public static func withDatabase<R>(
        _ databaseConfiguration: DatabaseConfiguration, options: Options, _ body: (Database) async throws -> R
    ) async throws -> R {
        let database = try Database(configuration: databaseConfiguration, logger: options.logger)
        database.start()
        return try await lifecycle([.init(service: DatabaseService(database: database))], options: options) { try await body(database) }
    }

    // The configurations are read lazily, in the order the CLI always reported problems: the
    // pool's first (and the token), then the database's.
    private static func assemble<R>(
        pool poolConfiguration: () throws -> HSMConfiguration, database databaseConfiguration: () throws -> DatabaseConfiguration,
        custody settings: CustodyGraph.Settings, options: Options,
        services: (CustosRuntime) async throws -> [ServiceGroupConfiguration.ServiceConfiguration],
        _ body: (CustosRuntime) async throws -> R
    ) async throws -> R {
        let pool = try await startedPool(try poolConfiguration(), options: options)
        var settings = settings
        do {
            if try await !requireCustodyCapabilities(pool) {
                options.logger.warning("an HSM module (of at least one configured token) has no Ed25519: v1a webhook keys are off, v1 works")
                settings.ed25519Webhooks = false
            }
        } catch {
            await pool.shutdown()
            throw error
        }
        let database: Database
        do {
            database = try Database(configuration: try databaseConfiguration(), logger: options.logger)
        } catch {
            await pool.shutdown()
            throw error
        }
        database.start()
        let runtime: CustosRuntime
        let members: [ServiceGroupConfiguration.ServiceConfiguration]
        do {
            try await Migrations.requireCurrent(database)
            let rootKeys = try await CustodyGraph.rootKeys(pool: pool, database: database, verify: options.verifyRootKeys, logger: options.logger)
            if settings.keyringStepHook == nil, let fault = options.stepFault {
                settings.keyringStepHook = { step in try fault.reached(step.description) }
            }
            runtime = CustosRuntime(
                custody: CustodyGraph(pool: pool, database: database, rootKeys: rootKeys, settings: settings, logger: options.logger),
                logger: options.logger, stepFault: options.stepFault
            )
            // Before the caller's services, so it stops after them (the group stops its services in
            // reverse order): the uses of the last requests are counted before the final flush,
            // which runs while the database and the pool are still up.
            let recorder = settings.keyUseFlushInterval.map {
                ServiceGroupConfiguration.ServiceConfiguration(service: KeyUseRecorderService(
                    recorder: runtime.custody.keyUseRecorder, interval: $0, logger: options.logger
                ))
            }
            members = (recorder.map { [$0] } ?? []) + (try await services(runtime))
        } catch {
            await database.shutdown()
            await pool.shutdown()
            throw error
        }
        return try await lifecycle(
            [.init(service: SessionPoolService(pool: pool)), .init(service: DatabaseService(database: database))] + members, options: options
        ) { try await body(runtime) }
    }

    /// Refuses a module that cannot keep tenant keys unreadable (it ignores unwrap templates,
    /// wraps in another format, or hides check values: ``SelfTest/capabilityChecks``), before
    /// anything is built on it. Optional features (Ed25519 webhooks) do not count.
    /// - Returns: whether every token's module has what `v1a` (Ed25519) webhook keys need.
    /// - Throws: ``ConfigurationError/moduleUnfit(modulePath:failed:)``.
    @discardableResult
    public static func requireCustodyCapabilities(_ pool: SessionPool) async throws -> Bool {
        // Every token's module: a call may move to any of them, and a v1a key is imported on
        // every token (one that cannot take it would fail every creation, opaquely).
        var ed25519 = true
        for token in pool.tokenPools {
            let results = await SelfTest.capabilities(of: token)
            let blockers = SelfTest.custodyBlockers(results)
            guard blockers.isEmpty else {
                throw ConfigurationError.moduleUnfit(modulePath: token.configuration.modulePath, failed: blockers.map { "\($0.name): \($0.detail)" })
            }
            if !SelfTest.supportsEd25519Webhooks(results) { ed25519 = false }
        }
        return ed25519
    }

    private static func startedPool(_ configuration: HSMConfiguration, options: Options) async throws -> SessionPool {
        let pool = if let module = options.module {
            try SessionPool(configuration: configuration, module: module, logger: options.logger)
        } else {
            try SessionPool(configuration: configuration, logger: options.logger)
        }
        try await pool.start()
        return pool
    }

    /// How long a graceful shutdown may wait for calls in flight before the group cancels them:
    /// a `ResealKeys` stream (up to its client's 6 h deadline) or a stuck call must not hold a
    /// deploy. A re-seal cut off rolls back only its batch in flight and resumes on its next run.
    static let gracefulShutdownLimit = Duration.seconds(30)

    /// Runs the group and `body` side by side; ends the group when `body` ends (or, for
    /// ``Options/Lifetime/services``, waits for the group). `body`'s error wins over the group's.
    private static func lifecycle<R>(
        _ members: [ServiceGroupConfiguration.ServiceConfiguration], options: Options, _ body: () async throws -> R
    ) async throws -> R {
        var configuration = ServiceGroupConfiguration(
            services: members, gracefulShutdownSignals: options.gracefulShutdownSignals, logger: options.logger
        )
        configuration.maximumGracefulShutdownDuration = gracefulShutdownLimit
        let group = ServiceGroup(configuration: configuration)
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let outcome: Result<R, any Error>
            do {
                outcome = .success(try await body())
            } catch {
                outcome = .failure(error)
            }
            let failed = if case .failure = outcome { true } else { false }
            if options.lifetime == .body || failed {
                await group.triggerGracefulShutdown()
            }
            var groupError: (any Error)?
            do {
                try await tasks.waitForAll()
            } catch {
                groupError = error
            }
            let result = try outcome.get()
            if let groupError { throw groupError }
            return result
        }
    }
}

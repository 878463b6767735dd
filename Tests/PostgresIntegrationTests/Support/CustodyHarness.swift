import Ceremony
import Composition
import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Logging
import PKCS11
import PostgresNIO
@testable import Storage
import Testing

/// Everything a custody test needs, all real: a fresh SoftHSM token with root keys, and a fresh
/// schema in the PostgreSQL cluster that `scripts/setup` started (migrated by the owner role,
/// used through the non-owner service role, as the service does).
final class CustodyHarness: Sendable {
    let token: TestToken
    /// The service's runtime (``CustosRuntime``) on this harness's token and schema: the pool,
    /// the service-role database and the custody services, started and assembled as `serve`
    /// does.
    let started: CustosRuntime.Started
    let owner: Database
    var graph: CustodyGraph { started.runtime.custody }
    var pool: SessionPool { graph.pool }
    var service: Database { graph.database }
    var audit: AuditLog { graph.audit }
    var keyring: TenantKeyring { graph.keyring }
    var apiKeys: APIKeyService { graph.apiKeys }
    var webhooks: WebhookSigner { graph.webhooks }
    let schema: String
    let settings: PostgresSettings
    let anchorPath: String
    let logs: LogCapture
    /// The share files of the root keys (2 of 3 restore them), as every install has them.
    let sharePaths: [String]
    /// The share files of the escrow key Ed25519 seeds are sealed to (2 of 3 open them).
    let escrowSharePaths: [String]
    /// Its fingerprint, trusted by the runtime's configuration as config.json's
    /// `webhookEscrowKeys` would be (empty without root keys: no escrow key then).
    let trustedEscrowKeys: Set<EscrowKeyFingerprint>

    /// - Parameter createRootKeys: `false` leaves the harness token without root keys (the key
    ///   ceremony test brings its own tokens and uses only the database).
    ///   `module`: a private copy of the PKCS#11 module (``TestToken/isolatedModule()``) for
    ///   tests that inject faults, so no other suite sees them.
    ///   `maxCachedKeys`: the pool's key cache bound (tests of eviction make it small).
    ///   `operationTimeout`: the service database's, instead of the usual 30 s (a test whose one
    ///   transaction holds many steps on purpose); its statement timeout keeps the usual
    ///   proportion (24 s of 30), since that transaction's steps wait on each other's locks.
    static func make(
        _ name: String, createRootKeys: Bool = true, module: PKCS11Module? = nil,
        keyringStepHook: (@Sendable (TenantKeyring.KeyringStep) throws -> Void)? = nil,
        maxCachedKeys: Int = HSMConfiguration.defaultMaxCachedKeys, operationTimeout: Duration? = nil
    ) async throws -> CustodyHarness {
        let settings = try PostgresSettings.load()
        let schema = "t_\(name)_\(UInt32.random(in: 0 ... .max))"
        let logs = LogCapture()
        var ownerConfiguration = settings.configuration(role: .owner, schema: schema)
        // Every suite migrates its own schema at once when the run starts, on 2 cores: the
        // whole herd's DDL comes before any one finishes (60 s was not enough in CI at 21
        // migrations and ~130 suites), so the deadline is the herd's, not one schema's.
        ownerConfiguration.operationTimeout = .seconds(240)
        ownerConfiguration.statementTimeout = .seconds(50)
        let owner = try Database(configuration: ownerConfiguration, logger: logs.logger)
        owner.start()
        try await Migrations.migrate(owner, serviceRole: settings.serviceUser, logger: logs.logger)
        let token = try TestToken.make(name)
        let anchorPath = TestEnvironment.directory + "/\(schema).anchor"
        // The token has no root keys yet (the ceremony below makes them): nothing to check, and
        // the graph uses the first ones (v1), as it would on that token.
        var poolConfiguration = token.configuration()
        poolConfiguration.maxCachedKeys = maxCachedKeys
        var serviceConfiguration = settings.configuration(role: .service, schema: schema)
        if let operationTimeout {
            serviceConfiguration.operationTimeout = operationTimeout
            serviceConfiguration.statementTimeout = operationTimeout * 4 / 5
        }
        let start = { [serviceConfiguration] (trusted: Set<EscrowKeyFingerprint>) in
            try await CustosRuntime.start(
                pool: poolConfiguration, database: serviceConfiguration,
                custody: CustodyGraph.Settings(
                    auditAnchorPath: anchorPath, keyEnvironment: "test", keyringStepHook: keyringStepHook, trustedEscrowKeys: trusted
                ),
                options: CustosRuntime.Options(logger: logs.logger, verifyRootKeys: false, module: module)
            )
        }
        var started = try await start([])
        let pool = started.runtime.pool
        // Root keys the way every install makes them: the ceremony, with shares.
        var sharePaths = [String](), escrowSharePaths = [String](), trustedEscrowKeys = Set<EscrowKeyFingerprint>()
        if createRootKeys {
            let directory = TestEnvironment.directory + "/\(schema).ceremony"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let ceremony = KeyCeremony(
                pool: pool, participants: try CeremonyParticipants(operatorName: "Test Operator", witnesses: ["Test Witness"]),
                configHash: "test", logger: logs.logger
            )
            sharePaths = try await ceremony.generateRoot(
                threshold: 2, shares: 3, outputDirectory: directory, transcript: CeremonyTranscript(path: directory + "/transcript.jsonl")
            ).sharePaths
            // And the escrow key, as every install that offers v1a webhook keys has it.
            let escrow = try await ceremony.generateEscrow(
                threshold: 2, shares: 3, outputDirectory: directory, transcript: CeremonyTranscript(path: directory + "/transcript.jsonl"),
                keyring: started.runtime.custody.keyring
            )
            escrowSharePaths = escrow.sharePaths
            // As an operator does after `generate-escrow`: the fingerprint into config.json, then
            // a restart (stopped first: one process logs in to a token once).
            trustedEscrowKeys = [escrow.fingerprint]
            await started.shutdown()
            started = try await start(trustedEscrowKeys)
        }
        return CustodyHarness(
            token: token, started: started, owner: owner, schema: schema, settings: settings, anchorPath: anchorPath, logs: logs, sharePaths: sharePaths,
            escrowSharePaths: escrowSharePaths, trustedEscrowKeys: trustedEscrowKeys
        )
    }

    private init(
        token: TestToken, started: CustosRuntime.Started, owner: Database, schema: String, settings: PostgresSettings, anchorPath: String, logs: LogCapture,
        sharePaths: [String], escrowSharePaths: [String], trustedEscrowKeys: Set<EscrowKeyFingerprint>
    ) {
        self.token = token
        self.started = started
        self.owner = owner
        self.schema = schema
        self.settings = settings
        self.anchorPath = anchorPath
        self.logs = logs
        self.sharePaths = sharePaths
        self.escrowSharePaths = escrowSharePaths
        self.trustedEscrowKeys = trustedEscrowKeys
    }

    /// A second service database client on the same schema, as another instance would have,
    /// started; by default configured as the harness's own.
    func secondServiceDatabase(maximumConnections: Int? = nil, operationTimeout: Duration? = nil) throws -> Database {
        var configuration = settings.configuration(role: .service, schema: schema)
        if let maximumConnections { configuration.maximumConnections = maximumConnections }
        if let operationTimeout { configuration.operationTimeout = operationTimeout }
        let database = try Database(configuration: configuration, logger: logs.logger)
        database.start()
        return database
    }

    /// Runs SQL as the schema owner with `app.tenant_id` set (the owner is subject to the
    /// forced row-level security too): how a tester with database access tampers with rows.
    func ownerSQL(tenant: TenantID?, _ query: PostgresQuery) async throws {
        try await owner.withTransaction(context: "owner SQL") { connection in
            if let tenant {
                try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            }
            try await connection.query(query, logger: Database.quiet)
        }
    }

    /// Another instance's `purpose` v`version` of `tenant` (a copy of v`copying`), stored and not
    /// committed while `call` starts; committed once the call's insert of the same version
    /// waits for it, so that the call meets the unique violation. - Returns: the call's task.
    func racingAnotherInstancesVersion<Result: Sendable>(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, copying: Int, _ call: @escaping @Sendable () async throws -> Result
    ) async throws -> Task<Result, any Error> {
        let columns = "tenant_id, purpose, version, state, wrapped_key, wrap_mechanism, root_kek_version, check_value, public_key, token_label, row_mac, retiring_until, created_at, activated_at, retired_at, destroyed_at, disabled_at, destruction_due_at, token_format"
        let copied = columns.replacingOccurrences(of: "version, state,", with: "\(version), 'pending',")
        let service = self.service
        return try await owner.withTransaction(context: "test: the other instance") { other in
            try await other.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            try await other.query(
                "INSERT INTO key_versions (\(unescaped: columns)) SELECT \(unescaped: copied) FROM key_versions WHERE purpose = \(purpose.rawValue) AND version = \(copying)",
                logger: Database.quiet
            )
            let task = Task { try await call() }
            var waits = false
            for _ in 0..<800 where !waits {
                try await Task.sleep(for: .milliseconds(25))
                waits = try await Database.allowingSecondConnection {
                    try await service.withConnection(context: "test: lock waits") { watcher in
                        try await watcher.query("""
                            SELECT count(*)::int FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                                AND application_name = current_setting('application_name') AND strpos(query, 'INSERT INTO key_versions') > 0
                            """, logger: Database.quiet).collect().first!.decode(Int.self) > 0
                    }
                }
            }
            #expect(waits, "the call never waited for the other instance's row")
            return task
        }
    }

    /// `pg_dump` of this test's schema, as the postgres superuser over the unix socket.
    func dump() throws -> String {
        try run(["/usr/sbin/runuser", "-u", "postgres", "--", settings.binary("pg_dump"), "-h", settings.socketDirectory,
                 "-p", String(settings.port), "-d", settings.database, "-n", schema])
    }

    func shutdown() async {
        await started.shutdown()
        _ = try? await owner.withConnection(context: "drop test schema") { connection in
            try await connection.query("DROP SCHEMA \(unescaped: self.schema) CASCADE", logger: Database.quiet)
        }
        await owner.shutdown()
    }
}

/// The cluster `scripts/setup` made, from `.custos/config.json` (found upwards from the
/// current directory, or `CUSTOS_CONFIG`).
struct PostgresSettings: Sendable {
    enum Role { case owner, service }

    let socketDirectory: String
    let port: Int
    let database: String
    let serviceUser: String
    let servicePassword: String
    let ownerUser: String
    let ownerPassword: String

    static func load() throws -> PostgresSettings {
        var directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        var path = ProcessInfo.processInfo.environment["CUSTOS_CONFIG"]
        while path == nil {
            let candidate = directory.appendingPathComponent(".custos/config.json").path
            if FileManager.default.fileExists(atPath: candidate) { path = candidate; break }
            let parent = directory.deletingLastPathComponent()
            if parent.path == directory.path { break }
            directory = parent
        }
        guard let path, let data = FileManager.default.contents(atPath: path),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let postgres = json["postgres"] as? [String: Any] else {
            throw StorageError.configuration("no .custos/config.json with a postgres section: run scripts/setup first")
        }
        func read(_ key: String) throws -> String {
            guard let file = postgres[key] as? String, let contents = FileManager.default.contents(atPath: file) else {
                throw StorageError.configuration("cannot read \(key)")
            }
            return String(decoding: contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return PostgresSettings(
            socketDirectory: postgres["socketDirectory"] as? String ?? "", port: postgres["port"] as? Int ?? 5432,
            database: postgres["database"] as? String ?? "custos",
            serviceUser: postgres["user"] as? String ?? "custos_service", servicePassword: try read("passwordFile"),
            ownerUser: postgres["ownerUser"] as? String ?? "custos_owner", ownerPassword: try read("ownerPasswordFile")
        )
    }

    /// Timeouts are 3× the service's defaults: some 40 suites run at once on a 2-core machine,
    /// and a call that waits its turn there is not a failure of what the suites test (the
    /// suites that test timeouts set their own).
    func configuration(role: Role, schema: String) -> DatabaseConfiguration {
        var configuration = DatabaseConfiguration(
            socketDirectory: socketDirectory, port: port, database: database,
            username: role == .owner ? ownerUser : serviceUser, password: role == .owner ? ownerPassword : servicePassword,
            schema: schema, maximumConnections: 4, statementTimeout: .seconds(24), operationTimeout: .seconds(30)
        )
        // Every suite's backends share one database and role: named by schema, a suite's lock
        // checks (`VerificationHarness.someoneWaitsOnALock`) see none of the others'.
        configuration.applicationName = "custos-\(schema)"
        return configuration
    }

    func binary(_ name: String) -> String {
        let candidate = "/usr/lib/postgresql/15/bin/\(name)"
        return FileManager.default.fileExists(atPath: candidate) ? candidate : "/usr/bin/\(name)"
    }
}

/// Runs a program, returns its standard output; throws if it fails.
func run(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0])
    process.arguments = Array(arguments.dropFirst())
    process.currentDirectoryURL = URL(fileURLWithPath: "/")
    let output = Pipe()
    process.standardOutput = output
    process.standardError = Pipe()
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw StorageError.configuration("\(arguments[0]) exited \(process.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

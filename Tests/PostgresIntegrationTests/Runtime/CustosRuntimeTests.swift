import Composition
import Custody
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Storage
import Synchronization
import Testing

/// The one composition root (issue 10, "Wiring"): the runtime's root-key rule, its shutdown on
/// every path, and the configuration it is built from.
@Suite("Runtime: one composition root for serve, the CLI, the benchmarks and the tests", .serialized)
struct CustosRuntimeTests {
    let logs = LogCapture()

    /// A migrated schema (the harness's) and a second, fresh token without root keys.
    func freshTokenOverHarness(_ name: String) async throws -> (CustodyHarness, TestToken, DatabaseConfiguration) {
        let harness = try await CustodyHarness.make(name)
        let token = try TestToken.make("\(name)-2")
        return (harness, token, harness.settings.configuration(role: .service, schema: harness.schema))
    }

    @Test("a token whose root keys fail the check is refused before the body runs, and the pool is closed again")
    func rootKeyCheckRefusesAndCloses() async throws {
        let (harness, token, database) = try await freshTokenOverHarness("rtcheck")
        let options = CustosRuntime.Options(logger: logs.logger)
        let settings = CustodyGraph.Settings(auditAnchorPath: nil, keyEnvironment: "test")
        let refused = await #expect(throws: CustodyError.self) {
            try await CustosRuntime.run(pool: token.configuration(), database: database, custody: settings, options: options) { _ in
                Issue.record("the body ran on a token without root keys")
            }
        }
        guard case .rootKeyMissing = refused else { Issue.record("got \(String(describing: refused))"); return }
        // A pool left logged in would make the next login on this token unverifiable.
        let workers = try await CustosRuntime.withPool(token.configuration(workers: 1), options: options) { $0.configuration.workers }
        #expect(workers == 1)

        // Only the root-KEK ceremony skips the check: then the token's keys are read as they are.
        let skipping = CustosRuntime.Options(logger: logs.logger, verifyRootKeys: false)
        let kekVersion = try await CustosRuntime.run(pool: token.configuration(), database: database, custody: settings, options: skipping) {
            $0.custody.rootKeys.kekVersion
        }
        #expect(kekVersion == 1)
        await harness.shutdown()
    }

    @Test("the body's error reaches the caller and the pool is shut down after it")
    func bodyErrorShutsDown() async throws {
        let (harness, token, database) = try await freshTokenOverHarness("rtbody")
        struct Planted: Error {}
        let options = CustosRuntime.Options(logger: logs.logger, verifyRootKeys: false)
        let pool = Mutex<SessionPool?>(nil)
        await #expect(throws: Planted.self) {
            try await CustosRuntime.run(
                pool: token.configuration(), database: database, custody: CustodyGraph.Settings(auditAnchorPath: nil), options: options
            ) { runtime in
                pool.withLock { $0 = runtime.pool }
                throw Planted()
            }
        }
        let closed = try #require(pool.withLock { $0 })
        let refused = await #expect(throws: HSMError.self) { try await closed.withSession { _ in } }
        guard case .notRunning = refused else { Issue.record("got \(String(describing: refused))"); return }
        await harness.shutdown()
    }

    @Test("a database that cannot be reached fails the start (the root-key check) as unavailable, and the pool is closed again")
    func unreachableDatabaseClosesPool() async throws {
        // A fresh token: the check reads it, then asks the database (before finding no root keys).
        let (harness, token, reachable) = try await freshTokenOverHarness("rtnodb")
        var database = reachable
        // A cluster that is not there (nothing shared is stopped): no socket file at all.
        database.socketPath = TestEnvironment.directory + "/no-cluster-\(UUID().uuidString.prefix(8))/.s.PGSQL.5432"
        database.connectTimeout = .seconds(1)
        database.operationTimeout = .seconds(2)
        let options = CustosRuntime.Options(logger: logs.logger)
        let failed = await #expect(throws: (any Error).self) {
            try await CustosRuntime.run(
                pool: token.configuration(workers: 1), database: database, custody: CustodyGraph.Settings(auditAnchorPath: nil), options: options
            ) { _ in
                Issue.record("the body ran without a database")
            }
        }
        let unavailable: Bool
        if let error = failed as? StorageError {
            unavailable = error.isRetryable
        } else if case .storage(let error)? = failed as? CustodyError {
            unavailable = error.isRetryable
        } else {
            unavailable = false
        }
        #expect(unavailable, "got \(String(describing: failed))")
        #expect(logs.text.contains("HSM session pool started"))
        #expect(logs.text.contains("HSM session pool stopped"), "the pool was left running after run threw")
        await harness.shutdown()
    }

    @Test("services that fail to build fail the start, and the pool and the database are closed again")
    func failingServicesShutDown() async throws {
        let (harness, token, database) = try await freshTokenOverHarness("rtservices")
        struct Planted: Error {}
        let options = CustosRuntime.Options(logger: logs.logger, verifyRootKeys: false)
        let pool = Mutex<SessionPool?>(nil)
        await #expect(throws: Planted.self) {
            try await CustosRuntime.run(
                pool: token.configuration(), database: database, custody: CustodyGraph.Settings(auditAnchorPath: nil), options: options,
                services: { runtime in
                    pool.withLock { $0 = runtime.pool }
                    throw Planted()
                }
            ) { _ in
                Issue.record("the body ran although the services failed")
            }
        }
        let closed = try #require(pool.withLock { $0 })
        let refused = await #expect(throws: HSMError.self) { try await closed.withSession { _ in } }
        guard case .notRunning = refused else { Issue.record("got \(String(describing: refused))"); return }
        await harness.shutdown()
    }

    @Test("a harness's runtime stops on shutdown: its pool refuses work afterwards")
    func startedRuntimeStops() async throws {
        let harness = try await CustodyHarness.make("rtstarted")
        _ = try await harness.keyring.createTenant(label: "runtime", actor: "test")
        await harness.shutdown()
        let refused = await #expect(throws: HSMError.self) { try await harness.pool.withSession { _ in } }
        guard case .notRunning = refused else { Issue.record("got \(String(describing: refused))"); return }
    }

    @Test("configuration: role defaults and typed errors with the CLI's messages")
    func configuration() throws {
        let directory = TestEnvironment.directory + "/runtime-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try writePrivateFile(directory + "/owner.password", SecretBytes(Array("owner-secret".utf8)))
        try writePrivateFile(directory + "/service.password", SecretBytes(Array("service-secret".utf8)))
        let hsm = CustosConfiguration.HSMSection(modulePath: TestToken.modulePath, tokenLabel: "t")
        let postgres = CustosConfiguration.PostgresSection(
            socketDirectory: "/tmp", port: 5432, database: "custos", user: "custos_service",
            passwordFile: directory + "/service.password", ownerPasswordFile: directory + "/owner.password"
        )
        let configuration = CustosConfiguration(hsm: hsm, postgres: postgres, source: directory + "/config.json")
        let owner = try configuration.databaseConfiguration(role: .owner)
        #expect(owner.username == "custos_owner")
        #expect(owner.schema == "custos")
        #expect(try configuration.databaseConfiguration(role: .service).username == "custos_service")
        #expect(configuration.auditAnchorPath == directory + "/audit-anchor.log")
        #expect(configuration.environment == "live")

        var single = configuration
        single.postgres?.maximumConnections = 1
        #expect(throws: ConfigurationError.invalid(path: directory + "/config.json", reason: "postgres.maximumConnections must be at least 2")) {
            try single.databaseConfiguration(role: .service)
        }

        #expect(throws: ConfigurationError.invalid(path: "defaults", reason: "no postgres section")) {
            try CustosConfiguration(hsm: hsm).databaseConfiguration(role: .service)
        }
        let noPIN = #expect(throws: ConfigurationError.self) { try CustosConfiguration(hsm: hsm).poolConfiguration() }
        #expect(noPIN?.description == "configuration defaults is invalid: no user PIN source (userPINFile or userPINEnvironment)")
        let missing = #expect(throws: ConfigurationError.self) { try CustosConfiguration.load(explicitPath: directory + "/absent.json") }
        #expect(missing?.description == "configuration missing: cannot read \(directory)/absent.json")
    }
}

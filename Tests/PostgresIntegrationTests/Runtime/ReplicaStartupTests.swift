import Ceremony
import Composition
@testable import Custody
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import Testing

/// Start-up over two tokens through the composition root `serve` uses (``CustosRuntime``): a
/// second token with a root of its own is refused before anything serves, naming the token and
/// the keys (never a check value); a replica restored from the first token's shares serves.
@Suite("Runtime: start-up over replica tokens", .serialized)
struct ReplicaStartupTests {
    let logs = LogCapture()

    /// The harness token first, `second` as its replica, each through its own copy of the module
    /// (the harness's own pool holds the shared module's login).
    func twoTokens(_ harness: CustodyHarness, _ second: TestToken) throws -> (HSMConfiguration, PKCS11Module) {
        let first = try TestToken.isolatedModule()
        var configuration = harness.token.configuration()
        configuration.modulePath = first.path
        configuration.replicas = [
            TokenEndpoint(modulePath: try TestToken.isolatedModule().path, token: .label(second.label), userPIN: .file(path: second.pinFile)),
        ]
        return (configuration, first)
    }

    @Test("root keys that differ: ReplicaTokensDiffer names the token and each label, no value; a replica restored from the shares serves")
    func replicaStartup() async throws {
        let harness = try await CustodyHarness.make("repstart")
        let database = harness.settings.configuration(role: .service, schema: harness.schema)
        let settings = CustodyGraph.Settings(auditAnchorPath: nil, keyEnvironment: "test")
        let participants = try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"])
        let directory = TestEnvironment.directory + "/\(harness.schema).replicas"
        try FileManager.default.createDirectory(atPath: directory + "/other-shares", withIntermediateDirectories: true)

        // C: another installation's root (its own ceremony and shares).
        let foreign = try TestToken.make("repstartc")
        let foreignPool = try SessionPool(configuration: foreign.configuration(), logger: logs.logger)
        try await foreignPool.start()
        let other = try await KeyCeremony(pool: foreignPool, participants: participants, configHash: "test", logger: logs.logger)
            .generateRoot(threshold: 2, shares: 3, outputDirectory: directory + "/other-shares", transcript: CeremonyTranscript(path: directory + "/other.jsonl"))
        await foreignPool.shutdown()

        let (foreignConfiguration, foreignModule) = try twoTokens(harness, foreign)
        let refused = await #expect(throws: ReplicaTokensDiffer.self) {
            try await CustosRuntime.run(
                pool: foreignConfiguration, database: database, custody: settings, options: CustosRuntime.Options(logger: logs.logger, module: foreignModule)
            ) { _ in Issue.record("served over a token with another root") }
        }
        let expectedLabels = (RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 1) } + [RootKeys.macLabel(version: 1)]).sorted()
        #expect(refused?.mismatches.map(\.label) == expectedLabels)
        #expect(refused?.mismatches.allSatisfy { $0.token == "label \"\(foreign.label)\"" && $0.problem == .differs } == true)
        let message = refused.map(String.init(describing:)) ?? ""
        #expect(message.contains(foreign.label) && message.contains(RootKeys.macLabel(version: 1)))
        for key in other.keys {
            #expect(!message.lowercased().contains(key.checkValue.lowercased()), "the message names keys, never their check values")
        }

        // B: restored from two of the harness's three shares, a replica: the service starts and serves.
        let replica = try TestToken.make("repstartb")
        let replicaPool = try SessionPool(configuration: replica.configuration(), logger: logs.logger)
        try await replicaPool.start()
        _ = try await KeyCeremony(pool: replicaPool, participants: participants, configHash: "test", logger: logs.logger)
            .restore(sharePaths: Array(harness.sharePaths.prefix(2)), transcript: CeremonyTranscript(path: directory + "/replica.jsonl"))
        await replicaPool.shutdown()

        let (replicaConfiguration, replicaModule) = try twoTokens(harness, replica)
        let inService = try await CustosRuntime.run(
            pool: replicaConfiguration, database: database, custody: settings, options: CustosRuntime.Options(logger: logs.logger, module: replicaModule)
        ) { runtime in
            // Serving: a tenant's keys are made and wrapped, on whichever token answers.
            _ = try await runtime.keyring.createTenant(label: "replicated", actor: "officer")
            return runtime.pool.tokenHealth.map { "\($0.label): \($0.status.inService)" }
        }
        #expect(inService == ["\(harness.token.label): true", "\(replica.label): true"])
        await harness.shutdown()
    }
}

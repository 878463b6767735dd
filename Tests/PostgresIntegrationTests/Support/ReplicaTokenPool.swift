import Ceremony
import HSM
import HSMTestSupport
import PKCS11

/// The harness's token and a replica restored onto a fresh token from 2 of the harness's 3
/// root-key shares (`custos ceremony restore`), under one pool: each token loaded through its
/// own copy of the module, so a fault injected on `moduleA` removes token A alone. Where the
/// replica and escrow tests start.
struct ReplicaTokenPool {
    let replica: TestToken
    let moduleA: PKCS11Module
    let pool: SessionPool

    /// Restores the replica, then starts the pool over both tokens.
    static func make(_ harness: CustodyHarness, replicaName: String) async throws -> Self {
        let replica = try await restoreReplica(harness, name: replicaName)
        var configuration = harness.token.configuration()
        configuration.replicas = [TokenEndpoint(modulePath: TestToken.modulePath, token: .label(replica.label), userPIN: .file(path: replica.pinFile))]
        let moduleA = try TestToken.isolatedModule()
        let pool = try SessionPool(
            configuration: configuration, module: moduleA, replicaModules: [try TestToken.isolatedModule()], logger: harness.logs.logger
        )
        try await pool.start()
        return Self(replica: replica, moduleA: moduleA, pool: pool)
    }

    /// A fresh token restored from 2 of the harness's 3 root-key shares (`custos ceremony restore`).
    static func restoreReplica(_ harness: CustodyHarness, name replicaName: String) async throws -> TestToken {
        let replica = try TestToken.make(replicaName)
        let restoring = try SessionPool(configuration: replica.configuration(), logger: harness.logs.logger)
        try await restoring.start()
        _ = try await KeyCeremony(
            pool: restoring, participants: try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"]),
            configHash: "test", logger: harness.logs.logger
        ).restore(sharePaths: Array(harness.sharePaths.prefix(2)), transcript: CeremonyTranscript(path: TestEnvironment.directory + "/\(replica.label).jsonl"))
        await restoring.shutdown()
        return replica
    }
}

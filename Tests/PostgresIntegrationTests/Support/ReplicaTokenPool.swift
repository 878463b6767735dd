import Ceremony
import Custody
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

    /// Custody over both tokens as an instance starts it: the root keys checked against the
    /// database, the keyring (auditing to the harness's log) over this pool, and a signer
    /// trusting the harness's escrow key. Reconciliation is the caller's (some tests run it, some must not).
    struct Services {
        let keyring: TenantKeyring
        let webhooks: WebhookSigner
    }

    func services(_ harness: CustodyHarness) async throws -> Services {
        let rootKeys = RootKeys(inventory: try await RootKeyCheck.verify(pool: pool, database: harness.service))
        let audit = AuditLog(pool: pool, database: harness.service, rootKeys: rootKeys, anchorPath: harness.anchorPath)
        let keyring = TenantKeyring(pool: pool, database: harness.service, rootKeys: rootKeys, audit: audit, logger: harness.logs.logger)
        return Services(keyring: keyring, webhooks: WebhookSigner(pool: pool, keyring: keyring, audit: audit, trustedEscrowKeys: harness.trustedEscrowKeys))
    }
}

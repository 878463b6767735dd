import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
@testable import Storage
import Testing

/// A real `kill -9` of `custos ceremony restore-webhook-keys` after it imported a key pair on the
/// replacement token and before its audit entry: the restore was listed before the import, so
/// running it again records that import (one audit entry), imports nothing twice, and the audit
/// chain verifies.
@Suite("restore-webhook-keys survives kill -9 between the import and its audit entry", .serialized)
struct WebhookKeyRestoreKillTests {
    /// `custos ceremony restore-webhook-keys --output json` with the given config and shares.
    static func restore(config: String, shares: [String], transcript: String, crashAt step: String? = nil) async throws -> (process: Process, output: String) {
        let output = Pipe()
        let process = try ChildCustos.spawn(
            ["ceremony", "restore-webhook-keys", "--config", config, "--operator", "Test Operator", "--witness", "Test Witness",
             "--transcript", transcript, "--output", "json"] + shares.flatMap { ["--share", $0] },
            environment: step.map { ["CUSTOS_CRASH_AT": $0] } ?? [:], output: output
        )
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        try await ChildCustos.waitForExit(process)
        return (process, String(decoding: printed, as: UTF8.self))
    }

    static func restoreEntries(_ harness: CustodyHarness, _ tenant: TenantID) async throws -> Int {
        try await harness.audit.tail(limit: 1_000).filter { $0.action == AuditAction.webhookEd25519Restore.rawValue && $0.tenant == tenant }.count
    }

    @Test("killed at restore-webhook-keys.imported: the key pair is on the new token, listed, unaudited; run again: recorded once, one key pair, the chain verifies")
    func restoreKilledBeforeAudit() async throws {
        let harness = try await CustodyHarness.make("rwkkill")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        let label = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 }?.tokenLabel)

        // The replacement token: root keys from the shares, no Ed25519 key yet; the child runs on it.
        let replacement = try await ReplicaTokenPool.restoreReplica(harness, name: "rwkkillb")
        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory, token: replacement)
        let transcript = directory + "/restore.jsonl"
        let shares = [harness.escrowSharePaths[0], harness.escrowSharePaths[2]]

        let (killed, _) = try await Self.restore(config: config, shares: shares, transcript: transcript, crashAt: "restore-webhook-keys.imported")
        #expect(ChildCustos.killedItself(killed), "the ceremony stopped at restore-webhook-keys.imported")
        let pool = try SessionPool(configuration: replacement.configuration(), module: try TestToken.isolatedModule(), logger: harness.logs.logger)
        try await pool.start()
        let publicKey = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 }?.publicKey)
        #expect(try await TenantKeyring.holdsEd25519(label: label, publicKey: publicKey, in: pool), "imported before the kill")
        #expect(try await Self.restoreEntries(harness, tenant) == 0, "killed before its audit entry")
        let listed = try await harness.service.withTransaction(context: "read listed restore") { connection in
            try await PendingWebhookKeyRestoreStore.tokens(label: label, on: connection)
        }
        #expect(listed == [String(describing: replacement.configuration().token)], "listed with the token it was imported onto")

        let (again, output) = try await Self.restore(config: config, shares: shares, transcript: transcript)
        #expect(again.terminationStatus == 0, "\(output)")
        let report = try JSONDecoder().decode(KeyCeremony.WebhookKeyRestoreReport.self, from: Data(output.utf8))
        #expect(report.imported.count == 1 && report.alreadyPresent.isEmpty && report.refused.isEmpty, "the interrupted import is recorded: \(report)")
        #expect(try await Self.restoreEntries(harness, tenant) == 1)
        let objects = try await pool.withPersistentSession { session in try session.findObjects([.class(.privateKey), .label(label)], limit: 4).count }
        #expect(objects == 1, "imported once")
        let cleared = try await harness.service.withTransaction(context: "read listed restore") { connection in
            try await PendingWebhookKeyRestoreStore.tokens(label: label, on: connection)
        }
        #expect(cleared == nil)

        // A third run: present everywhere, nothing listed, nothing recorded.
        let (third, thirdOutput) = try await Self.restore(config: config, shares: shares, transcript: transcript)
        #expect(third.terminationStatus == 0, "\(thirdOutput)")
        let thirdReport = try JSONDecoder().decode(KeyCeremony.WebhookKeyRestoreReport.self, from: Data(thirdOutput.utf8))
        #expect(thirdReport.imported.isEmpty && thirdReport.alreadyPresent.count == 1, "\(thirdReport)")
        #expect(try await Self.restoreEntries(harness, tenant) == 1)
        #expect(try await harness.audit.verify().isIntact)
        await pool.shutdown()
        await harness.shutdown()
    }
}

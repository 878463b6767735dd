import Composition
import Custody
import CustosModel
import Foundation
import HSMTestSupport
@testable import Storage
import Testing
import Verification

/// A real `kill -9` of the `custos serve` process in the middle of `custos key reseal`: the
/// batch in flight rolls back with the killed server's connection, nothing is lost, and the
/// next run finishes the rest, sealing nothing twice.
@Suite("Re-sealing survives kill -9 of the server", .serialized)
struct ResealKillTests {
    @Test("kill -9 of the server mid-run: every record under one version and opening; a run again finishes, each record re-sealed once")
    func killServerMidRun() async throws {
        let verification = try await VerificationHarness.make("resealkill")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let made = try await DataResealTests.makeSessions(verification, tenant, count: 300, prefix: "x")
        let sealed = made.filter { $0.name != nil || $0.email != nil }.count
        try await keyring.rotate(tenant, .data, actor: "officer")

        let directory = try ChildCustos.directory(verification.custody)
        let config = try ChildCustos.writeConfiguration(verification.custody, in: directory)
        let (server, address) = try await ChildCustos.serve(config: config, in: directory)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        let served = try #require(address, "custos serve did not start")

        let output = Pipe()
        let client = try ChildCustos.spawn([
            "key", "reseal", "--config", config, "--server", served, "--tenant", tenant.rawValue, "--purpose", "data",
            "--batch-size", "1", "--output", "json",
        ], output: output)
        // Three batches reported: the run is under way. Kill the server between two rows.
        var seen = 0
        var buffered = Data()
        let reader = output.fileHandleForReading
        while seen < 3 {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            buffered.append(chunk)
            seen = buffered.split(separator: UInt8(ascii: "\n")).count
        }
        #expect(seen >= 3, "custos key reseal printed no progress")
        kill(server.processIdentifier, SIGKILL)
        try await ChildCustos.waitForExit(client, seconds: 180)
        try await ChildCustos.waitForExit(server, seconds: 180)
        #expect(client.terminationStatus == 2, "the CLI reports the server's failure")

        // Each record entirely under v1 or v2, each opening under the version its row names.
        let rows = try await DataResealTests.rows(verification, tenant, made)
        let moved = rows.values.filter { $0.dataKeyVersion == 2 }.count
        #expect(moved >= 3 && moved < sealed, "the kill landed mid-run")
        #expect(rows.values.filter { $0.dataKeyVersion == 1 }.count == sealed - moved)
        try await DataResealTests.expectAllOpen(verification, tenant, made, under: nil, others: [1, 2])

        let resumed = try await verification.graph.reseal.run(tenant: tenant, actor: "officer:alice", batchSize: 50)
        #expect(resumed.resealed == sealed - moved, "only what the killed run had not committed")
        try await DataResealTests.expectAllOpen(verification, tenant, made, under: 2, others: [1])
        await verification.custody.shutdown()
    }
}

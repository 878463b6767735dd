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
    /// The repository (Tests/PostgresIntegrationTests/KeyHierarchy/ResealKillTests.swift → root).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// A config.json for a child `custos` on the harness's token and schema, with the test CA's
    /// server and officer certificates.
    static func writeConfiguration(_ harness: CustodyHarness, in directory: String) throws -> String {
        var path = ProcessInfo.processInfo.environment["CUSTOS_CONFIG"]
        var folder = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
        while path == nil {
            let candidate = folder.appendingPathComponent(".custos/config.json").path
            if FileManager.default.fileExists(atPath: candidate) { path = candidate; break }
            let parent = folder.deletingLastPathComponent()
            if parent.path == folder.path { break }
            folder = parent
        }
        let setup = try #require(path.flatMap { FileManager.default.contents(atPath: $0) })
        var json = try #require(try JSONSerialization.jsonObject(with: setup) as? [String: Any])
        var postgres = try #require(json["postgres"] as? [String: Any])
        postgres["schema"] = harness.schema
        json["postgres"] = postgres
        json["hsm"] = [
            "modulePath": TestToken.modulePath, "tokenLabel": harness.token.label, "userPINFile": harness.token.pinFile,
            "softhsmConf": TestEnvironment.directory + "/softhsm2.conf", "workers": 2,
        ] as [String: Any]
        let certificates = try TestCertificates.get()
        json["rpc"] = [
            "host": "127.0.0.1", "port": 0, "metricsPort": 0,
            "serverCertificate": certificates.path("server.pem"), "serverKey": certificates.path("server.key"),
            "caCertificate": certificates.path("ca.pem"),
            "clientCertificate": certificates.path("officer-alice.pem"), "clientKey": certificates.path("officer-alice.key"),
        ] as [String: Any]
        json["keyEnvironment"] = "test"
        let file = directory + "/config.json"
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: file))
        return file
    }

    static func custos(_ arguments: [String], output: Pipe?) throws -> Process {
        let binary = root.appendingPathComponent(".build/debug/custos")
        try #require(FileManager.default.isExecutableFile(atPath: binary.path), "no \(binary.path): build the package first (scripts/setup, swift build)")
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    @Test("kill -9 of the server mid-run: every record under one version and opening; a run again finishes, each record re-sealed once")
    func killServerMidRun() async throws {
        let verification = try await VerificationHarness.make("resealkill")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let made = try await DataResealTests.makeSessions(verification, tenant, count: 300, prefix: "x")
        let sealed = made.filter { $0.name != nil || $0.email != nil }.count
        try await keyring.rotate(tenant, .data, actor: "officer")

        let directory = TestEnvironment.directory + "/\(verification.custody.schema).serve"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = try Self.writeConfiguration(verification.custody, in: directory)
        let addressFile = directory + "/address"
        let server = try Self.custos(["serve", "--config", config, "--port", "0", "--metrics-port", "0", "--address-file", addressFile], output: nil)
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        var address: String?
        for _ in 0..<600 where address == nil {
            if let text = try? String(contentsOfFile: addressFile, encoding: .utf8), text.contains(":") {
                address = text.trimmingCharacters(in: .whitespacesAndNewlines)
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let served = try #require(address, "custos serve did not start")

        let output = Pipe()
        let client = try Self.custos([
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
        server.waitUntilExit()
        client.waitUntilExit()
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

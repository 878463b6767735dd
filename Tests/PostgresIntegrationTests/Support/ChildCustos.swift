import Foundation
import HSMTestSupport
import Synchronization
import Testing

/// The debug `custos` binary run as a child process on a harness's token and schema, for the
/// kill tests: debug builds kill themselves with SIGKILL at the step `CUSTOS_CRASH_AT` names
/// (``StepFault``), so a test stops a real process exactly between two steps of a change and
/// then checks what start-up, or the next run, makes of it.
enum ChildCustos {
    /// The repository (Tests/PostgresIntegrationTests/Support/ChildCustos.swift → root).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// A folder for one harness's child processes (config, address file).
    static func directory(_ harness: CustodyHarness) throws -> String {
        let directory = TestEnvironment.directory + "/\(harness.schema).serve"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    /// A config.json for a child `custos` on the harness's token (or `token`) and schema, with
    /// the test CA's server and officer certificates; `replica`, a second token (loaded from its
    /// own copy of the module: two tokens must not share one), makes it `hsm.tokens`.
    static func writeConfiguration(
        _ harness: CustodyHarness, in directory: String, token: TestToken? = nil, replica: (token: TestToken, modulePath: String)? = nil
    ) throws -> String {
        let token = token ?? harness.token
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
        var hsm: [String: Any] = [
            "modulePath": TestToken.modulePath, "tokenLabel": token.label, "userPINFile": token.pinFile,
            "softhsmConf": TestEnvironment.directory + "/softhsm2.conf", "workers": 2,
        ]
        if let replica {
            hsm["tokens"] = [
                ["modulePath": TestToken.modulePath, "tokenLabel": token.label, "userPINFile": token.pinFile],
                ["modulePath": replica.modulePath, "tokenLabel": replica.token.label, "userPINFile": replica.token.pinFile],
            ]
        }
        json["hsm"] = hsm
        let certificates = try TestCertificates.get()
        json["rpc"] = [
            "host": "127.0.0.1", "port": 0, "metricsPort": 0,
            "serverCertificate": certificates.path("server.pem"), "serverKey": certificates.path("server.key"),
            "caCertificate": certificates.path("ca.pem"),
            "clientCertificate": certificates.path("officer-alice.pem"), "clientKey": certificates.path("officer-alice.key"),
        ] as [String: Any]
        json["keyEnvironment"] = "test"
        // The harness's escrow key, not setup's (the child seals to this schema's).
        json["webhookEscrowKeys"] = harness.trustedEscrowKeys.map(\.description)
        let file = directory + "/config.json"
        try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]).write(to: URL(fileURLWithPath: file))
        return file
    }

    /// Starts `.build/debug/custos arguments` with `environment` added to this process's.
    /// - Parameter output: where its standard output goes (discarded without).
    static func spawn(_ arguments: [String], environment: [String: String] = [:], output: Pipe? = nil) throws -> Process {
        let binary = root.appendingPathComponent(".build/debug/custos")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw TestFailure("no \(binary.path): build the package first (scripts/setup, swift build)")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Starts `custos serve` on `config` (ports chosen by the kernel) and, unless it dies first
    /// (a crash step reached at start-up), waits until it listens.
    /// - Returns: the server, and its address once it listens (`nil` when it died first).
    static func serve(config: String, in directory: String, environment: [String: String] = [:]) async throws -> (server: Process, address: String?) {
        let addressFile = directory + "/address"
        try? FileManager.default.removeItem(atPath: addressFile)
        let server = try spawn(
            ["serve", "--config", config, "--port", "0", "--metrics-port", "0", "--address-file", addressFile], environment: environment
        )
        for _ in 0..<600 where server.isRunning {
            if let text = try? String(contentsOfFile: addressFile, encoding: .utf8), text.contains(":") {
                return (server, text.trimmingCharacters(in: .whitespacesAndNewlines))
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        if server.isRunning {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
            throw TestFailure("custos serve did not start")
        }
        return (server, nil)
    }

    /// Two `custos serve` processes on one configuration (the harness's schema and token), each
    /// in its own directory, both listening: what the failover tests kill one of.
    static func serveTwo(
        _ harness: CustodyHarness
    ) async throws -> (config: String, children: ChildProcesses, first: (server: Process, address: String), second: (server: Process, address: String)) {
        let directory = try directory(harness)
        let config = try writeConfiguration(harness, in: directory)
        for name in ["a", "b"] { try FileManager.default.createDirectory(atPath: directory + "/" + name, withIntermediateDirectories: true) }
        let children = ChildProcesses([])
        var listening = [(server: Process, address: String)]()
        for name in ["a", "b"] {
            let (server, address) = try await serve(config: config, in: directory + "/" + name)
            children.add(server)
            guard let address else {
                children.killAll()
                throw TestFailure("custos serve \(name) died before it listened")
            }
            listening.append((server, address))
        }
        return (config, children, listening[0], listening[1])
    }

    /// Waits up to `seconds` for `process` to end on its own; kills it with SIGKILL after that.
    static func waitForExit(_ process: Process, seconds: Int = 60) async throws {
        for _ in 0..<(seconds * 10) where process.isRunning { try await Task.sleep(for: .milliseconds(100)) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Whether `process` stopped itself with SIGKILL (a crash step reached).
    static func killedItself(_ process: Process) -> Bool {
        process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL
    }
}

/// The child processes a test started, killed (SIGKILL) and reaped at its end.
final class ChildProcesses: Sendable {
    private let processes: Mutex<[Process]>

    init(_ processes: [Process]) { self.processes = Mutex(processes) }

    func add(_ process: Process) { processes.withLock { $0.append(process) } }

    func killAll() {
        for process in processes.withLock({ $0 }) where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

import CustosCommandLine
import Foundation

/// A release `custos serve` child of the failover bench, on any free port, the configuration
/// given. Only this process is ever signalled, by its pid.
final class ServeProcess: @unchecked Sendable {
    // SAFETY: `process` is set once in init; Foundation's Process is safe to signal and query
    // from any thread once running.
    private let process: Process
    /// host:port, as the server wrote it once listening.
    let address: String
    let log: String

    /// Starts `custos serve` beside this executable and waits (60 s at most) until it listens.
    /// - Throws: ``LocalError`` when it exits first or never writes its address.
    init(binary: URL, config: String, directory: URL, name: String) async throws {
        let addressFile = directory.appendingPathComponent("\(name).address").path
        log = directory.appendingPathComponent("\(name).log").path
        _ = FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600])
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve", "--config", config, "--port", "0", "--metrics-port", "0", "--address-file", addressFile]
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<600 where process.isRunning {
            if let text = try? String(contentsOfFile: addressFile, encoding: .utf8), text.contains(":") {
                address = text.trimmingCharacters(in: .whitespacesAndNewlines)
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        throw LocalError.failed("custos serve (\(name)) did not listen within 60 s; its log: \(log)")
    }

    var isRunning: Bool { process.isRunning }

    /// `kill -9`: no graceful shutdown, connections reset, transactions in flight rolled back.
    func kill9() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// SIGTERM (graceful), then SIGKILL after 30 s.
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning, Date() < deadline { usleep(100_000) }
        kill9()
    }
}

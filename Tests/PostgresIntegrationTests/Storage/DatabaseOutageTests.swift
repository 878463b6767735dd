import Foundation
import PostgresNIO
@testable import Storage
import Testing

/// A unix-socket proxy (socat) between the client and PostgreSQL: stopping it takes the
/// database away from this client only, without disturbing the other suites' connections.
private final class SocketProxy: Sendable {
    let directory: String
    let target: String
    var socketPath: String { directory + "/.s.PGSQL.5432" }

    init(target: String) throws {
        directory = NSTemporaryDirectory() + "custos-proxy-\(UInt32.random(in: 0 ... .max))"
        self.target = target
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func start() throws {
        try? FileManager.default.removeItem(atPath: socketPath)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/socat")
        process.arguments = ["UNIX-LISTEN:\(socketPath),fork", "UNIX-CONNECT:\(target)"]
        // Never inherit the runner's pipes: swift test waits for them to close.
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socketPath) { usleep(5_000) }
    }

    /// Kills the listener and every forked connection (they all name this socket). SIGKILL:
    /// processes started from the test runner may inherit a blocked SIGTERM.
    func stop() throws {
        _ = try? run(["/usr/bin/pkill", "-KILL", "-f", "UNIX-LISTEN:\(socketPath)"])
        for _ in 0..<200 {
            if (try? run(["/usr/bin/pgrep", "-f", "UNIX-LISTEN:\(socketPath)"])) == nil { break }
            usleep(5_000)
        }
        try? FileManager.default.removeItem(atPath: socketPath)
    }
}

@Suite("Storage: database outage")
struct DatabaseOutageTests {
    @Test("While the database is away calls fail 'unavailable' (retryable); when it is back the pool recovers by itself")
    func outageAndRecovery() async throws {
        let settings = try PostgresSettings.load()
        let proxy = try SocketProxy(target: "\(settings.socketDirectory)/.s.PGSQL.\(settings.port)")
        try proxy.start()
        var configuration = settings.configuration(role: .service, schema: "custos")
        configuration.socketPath = proxy.socketPath
        // Generous: the suites run in parallel on two cores, and a first connection can be slow.
        configuration.operationTimeout = .seconds(5)
        configuration.connectTimeout = .seconds(1)
        let database = try Database(configuration: configuration, logger: LogCaptureHolder.logger)
        database.start()
        @Sendable func ping() async throws -> Int {
            try await database.withTransaction(context: "ping") { connection in
                try await connection.query("SELECT 1", logger: Database.quiet).collect().first!.decode(Int.self)
            }
        }
        var up = false
        for _ in 0..<4 where !up { up = (try? await ping()) == 1 }
        #expect(up, "the database answers through the proxy before the outage")

        try proxy.stop()
        var failures = 0
        for _ in 0..<3 {
            do {
                _ = try await ping()
            } catch let error as StorageError {
                #expect(error.isRetryable, "\(error)")
                failures += 1
            }
        }
        #expect(failures == 3, "every call fails while the database is away")

        try proxy.start()
        var recovered = false
        let deadline = ContinuousClock.now + .seconds(20)
        while !recovered, ContinuousClock.now < deadline {
            recovered = (try? await ping()) == 1
            if !recovered { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(recovered, "the same Database serves again without a restart")
        await database.shutdown()
        try proxy.stop()
    }
}

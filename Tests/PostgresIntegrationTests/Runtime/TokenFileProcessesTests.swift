import Foundation
import HSMTestSupport
import PKCS11
import Synchronization
import Testing

/// The cross-process half of `TokenFileConcurrencyTests`: SoftHSM 2.6.1 rewrites a token's file
/// at every `C_Login`, leaving it empty for milliseconds, and a `C_Initialize` in another
/// process scanning the folder meanwhile misses the token, gives it slot 0, or (two such
/// tokens) aborts — the abort can empty other tokens' files. Every Custos process takes an
/// exclusive `flock` on the token folder around those calls (`SoftHSMTokenFolderLock`).
@Suite("Token files: initialisations beside other Custos processes' logins", .serialized)
struct TokenFileProcessesTests {
    /// Children started, and what went wrong with any, shared with their threads.
    final class Children: Sendable {
        let stopped = Atomic<Bool>(false)
        let runs = Atomic<Int>(0)
        /// Loops that ended (a child could not be started).
        let ended = Atomic<Int>(0)
        let failures = Mutex([String]())
    }

    @Test("A module copy initialised over and over while four `custos hsm status` processes start and log in finds every token; no child fails")
    func scansBesideOtherProcesses() async throws {
        let tokens = try (0..<4).map { _ in try TestToken.make("token-procs") }
        let directory = TestEnvironment.directory + "/token-file-processes-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let configurations = try tokens.enumerated().map { index, token in
            let path = directory + "/config-\(index).json"
            let json: [String: Any] = ["hsm": [
                "modulePath": TestToken.modulePath, "tokenLabel": token.label, "userPINFile": token.pinFile,
                "softhsmConf": TestEnvironment.directory + "/softhsm2.conf", "workers": 1,
            ]]
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
            return path
        }
        let children = Children()
        // Each child initialises (a scan) and logs in (a rewrite of its token's file).
        let loops = configurations.map { configuration in
            Self.onThread {
                while !children.stopped.load(ordering: .acquiring) {
                    do {
                        let child = try ChildCustos.spawn(["hsm", "status", "--config", configuration, "--output", "json"])
                        child.waitUntilExit()
                        children.runs.add(1, ordering: .relaxed)
                        if child.terminationReason != .exit || child.terminationStatus != 0 {
                            children.failures.withLock { $0.append("\(child.terminationReason == .exit ? "exit" : "signal") \(child.terminationStatus)") }
                        }
                    } catch {
                        children.failures.withLock { $0.append("\(error)") }
                        children.ended.add(1, ordering: .releasing)
                        return
                    }
                }
            }
        }
        let missed = await Self.onThread { () -> [String] in
            var missed = [String]()
            do {
                // A module copy of its own: each initialisation scans the token folder afresh.
                let scanner = try TestToken.isolatedModule()
                // A miss needs a scan to read a token's file in the few milliseconds a login
                // leaves it empty: without the lock about 1.5 scans in 1,000 missed here (scans of
                // ~1.6 ms, a child's start and login every ~40 ms), so scan for 6 seconds.
                let end = ContinuousClock.now + .seconds(6)
                var round = 0
                // The children should have run a few times too. `scripts/test` runs this suite in
                // a test process of its own (a folder of a few tokens); under a plain `swift test`
                // the folder holds the whole run's hundreds and every scan is slow: no more than
                // 14 s past that, nor once every child loop has ended.
                while ContinuousClock.now < end || children.runs.load(ordering: .relaxed) < 12,
                      ContinuousClock.now < end + .seconds(14), children.ended.load(ordering: .acquiring) < configurations.count {
                    missed += try TokenFolderScan.misses(scanner: scanner, tokens: tokens, round: round)
                    round += 1
                }
            } catch {
                missed.append("scanner: \(error)")
            }
            children.stopped.store(true, ordering: .releasing)
            return missed
        }.value
        for loop in loops { await loop.value }
        #expect(missed.isEmpty, "\(missed.count) misses, first: \(missed.prefix(3))")
        #expect(children.failures.withLock { $0 }.isEmpty, "children that failed: \(children.failures.withLock { $0.prefix(3) })")
        #expect(children.runs.load(ordering: .relaxed) >= 4, "children ran while the scans went on")
    }

    /// Runs blocking `body` (process waits, PKCS#11 calls) on a thread of its own, off the
    /// cooperative pool the other suites share.
    static func onThread<R: Sendable>(_ body: @escaping @Sendable () -> R) -> Task<R, Never> {
        Task {
            await withCheckedContinuation { continuation in
                Thread { continuation.resume(returning: body()) }.start()
            }
        }
    }
}

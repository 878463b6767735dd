import ArgumentParser
import CustosCommandLine
import Foundation
import HSM
import Logging
import PKCS11
import SecureMemory
import Synchronization

/// `custos-bench failover-token`: HMAC load on a pool over two SoftHSM tokens while token A is
/// removed (every PKCS#11 function of its module answers `CKR_DEVICE_REMOVED`) and then comes back.
///
/// The tokens are made for the run in a private SoftHSM directory, each loaded through its own
/// copy of the module (tokens on one loaded module share its C_Initialize/C_Finalize), with the
/// same HMAC key imported as a token object on both, as replica root keys are. Every answer is
/// checked against the one both tokens gave before the load. Pool level, not through the RPC:
/// what the token failover itself costs callers, with no client retries.
struct TokenFailoverBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover-token", abstract: "HMAC load over two tokens while one is removed and comes back (local, private SoftHSM tokens)."
    )

    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "SoftHSM module to copy for each token.") var module = "/usr/lib/softhsm/libsofthsm2.so"
    @Option(help: "Concurrent callers.") var tasks = 32
    @Option(help: "Worker threads (sessions) per token.") var workers = 2
    @Option(help: "Seconds of load before token A is removed.") var before: Double = 2
    @Option(help: "Seconds token A stays removed.") var outage: Double = 3
    @Option(help: "Seconds of load after token A returns (the run also waits until it is back in service).") var after: Double = 3

    func run() async throws {
        let directory = try privateSoftHSM()
        let pins = (SecretBytes(randomPIN()), SecretBytes(randomPIN()))
        setenv("CUSTOS_BENCH_PIN_A", String(decoding: pins.0.withUnsafeBytes { Array($0) }, as: UTF8.self), 1)
        setenv("CUSTOS_BENCH_PIN_B", String(decoding: pins.1.withUnsafeBytes { Array($0) }, as: UTF8.self), 1)
        let moduleA = try PKCS11Module(path: try copy(module, into: directory, as: "a.so"))
        let moduleB = try PKCS11Module(path: try copy(module, into: directory, as: "b.so"))
        let keyBytes = SecretBytes(count: 32) { buffer in
            for index in buffer.indices { buffer[index] = UInt8.random(in: 0 ... 255) }
        }
        for (module, label, pin) in [(moduleA, "bench-a", pins.0), (moduleB, "bench-b", pins.1)] {
            _ = try TokenProvisioning.initializeToken(module: module, label: label, securityOfficerPIN: SecretBytes(randomPIN()), userPIN: pin)
            try importKey(keyBytes, module: module, label: label, pin: pin)
        }

        var configuration = HSMConfiguration(
            modulePath: moduleA.path, token: .label("bench-a"), userPIN: .environment(name: "CUSTOS_BENCH_PIN_A"), workers: workers
        )
        configuration.replicas = [TokenEndpoint(modulePath: moduleB.path, token: .label("bench-b"), userPIN: .environment(name: "CUSTOS_BENCH_PIN_B"))]
        let pool = try SessionPool(configuration: configuration, module: moduleA, replicaModules: [moduleB], logger: Logger(label: "custos-bench"))
        try await pool.start()
        let fault = DeviceRemovedFault()
        moduleA.installFaultInjector(fault)
        let report = try await load(pool, fault: fault)
        await pool.shutdown()
        try? FileManager.default.removeItem(atPath: directory)
        if json {
            print(try encodeJSON(report))
        } else {
            print(report.text)
        }
    }

    // MARK: The run

    struct Report: Encodable {
        var tasks: Int
        var workersPerToken: Int
        var seconds: Double
        var outageSeconds: Double
        var callsMade = 0
        var succeeded = 0
        var failedByCode = [String: Int]()
        var wrongResults = 0
        var successRate = 0.0
        /// Longest time without any successful call, anywhere in the run.
        var longestGapMilliseconds = 0.0
        /// From the fault to token A being out of service (no call goes to it any more).
        var takenOutAfterMilliseconds: Double?
        /// From the fault clearing to token A serving again (probe + its breaker's pause).
        var timeToRecoverMilliseconds: Double?
        var callsPerSecondBefore = 0.0
        var callsPerSecondDuringOutage = 0.0
        var callsPerSecondAfter = 0.0

        var text: String {
            let failures = failedByCode.isEmpty ? "none" : failedByCode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            return """
            failover-token: \(tasks) callers, \(workersPerToken) workers per token, \(String(format: "%.1f", seconds)) s, token A removed for \(String(format: "%.1f", outageSeconds)) s
            calls made        \(callsMade)
            succeeded         \(succeeded) (\(String(format: "%.3f", successRate * 100)) %)
            failed            \(failures)
            wrong results     \(wrongResults)
            longest gap       \(String(format: "%.1f", longestGapMilliseconds)) ms
            A taken out after \(takenOutAfterMilliseconds.map { String(format: "%.1f ms", $0) } ?? "never")
            time to recover   \(timeToRecoverMilliseconds.map { String(format: "%.1f ms", $0) } ?? "not recovered")
            calls/s           before \(Int(callsPerSecondBefore)), during outage \(Int(callsPerSecondDuringOutage)), after \(Int(callsPerSecondAfter))
            """
        }
    }

    private func load(_ pool: SessionPool, fault: DeviceRemovedFault) async throws -> Report {
        let key = HSMKey.tokenObject(label: "bench/hmac")
        let messages = (0..<256).map { index in [UInt8](repeating: UInt8(index), count: 64) }
        // The answers both tokens give before the run: every answer under load must be one of them.
        var expected = [[UInt8]]()
        for message in messages {
            let a = try await pool.tokenPools[0].hmacSHA256(key: key, data: message)
            let b = try await pool.tokenPools[1].hmacSHA256(key: key, data: message)
            guard a == b else { throw ValidationError("the two bench tokens disagree: the key import failed") }
            expected.append(a)
        }
        let expectedAnswers = expected
        let tally = LoadTally()
        let clock = ContinuousClock()
        let start = clock.now
        let stop = StopSignal()
        var report = Report(tasks: tasks, workersPerToken: workers, seconds: 0, outageSeconds: outage)
        let phaseCounts = try await withThrowingTaskGroup(of: [Int]?.self) { group -> [Int] in
            for task in 0..<tasks {
                group.addTask {
                    var index = task
                    while !stop.flag.load(ordering: .relaxed) {
                        index &+= 7
                        let slot = index & 255
                        do {
                            let mac = try await pool.hmacSHA256(key: key, data: messages[slot])
                            tally.record(mac == expectedAnswers[slot] ? .success : .wrong, at: clock.now - start)
                        } catch let error as HSMError {
                            tally.record(.failed(Self.code(error)), at: clock.now - start)
                        }
                    }
                    return nil
                }
            }
            group.addTask {
                defer { stop.flag.store(true, ordering: .relaxed) }
                try await Task.sleep(for: .seconds(before))
                let countBefore = tally.calls
                fault.armed.store(true, ordering: .relaxed)
                let armed = clock.now
                while pool.tokenStatuses[0].inService, clock.now - armed < .seconds(outage) { try await Task.sleep(for: .milliseconds(1)) }
                if !pool.tokenStatuses[0].inService { tally.setTakenOut(clock.now - armed) }
                try await Task.sleep(until: armed + .seconds(outage))
                let countDuring = tally.calls
                fault.armed.store(false, ordering: .relaxed)
                let cleared = clock.now
                while !pool.tokenStatuses[0].inService, clock.now - cleared < .seconds(60) { try await Task.sleep(for: .milliseconds(1)) }
                if pool.tokenStatuses[0].inService { tally.setRecovered(clock.now - cleared) }
                let afterStart = tally.calls
                try await Task.sleep(for: .seconds(after))
                return [countBefore, countDuring - countBefore, tally.calls - afterStart]
            }
            var counts = [Int]()
            for try await result in group { if let result { counts = result } }
            return counts
        }
        let elapsed = clock.now - start
        report.seconds = elapsed.seconds
        tally.fill(&report, end: elapsed)
        if phaseCounts.count == 3 {
            report.callsPerSecondBefore = Double(phaseCounts[0]) / before
            report.callsPerSecondDuringOutage = Double(phaseCounts[1]) / outage
            report.callsPerSecondAfter = Double(phaseCounts[2]) / after
        }
        return report
    }

    static func code(_ error: HSMError) -> String {
        switch error {
        case .exhausted: "exhausted"
        case .unavailable: "unavailable"
        case .pinRejected, .pinLocked, .loginUnverifiable, .pinUnreadable: "pin"
        case .keyNotFound: "key-not-found"
        case .duplicateKey: "duplicate-key"
        case .operationFailed(let error), .transientFailure(let error): error.returnValue.name
        case .notRunning: "not-running"
        case .configuration: "configuration"
        }
    }

    // MARK: Set-up

    /// A fresh SoftHSM token directory for this run only (the configured tokens are not touched).
    private func privateSoftHSM() throws -> String {
        let directory = NSTemporaryDirectory() + "custos-bench-failover-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/tokens", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let conf = directory + "/softhsm2.conf"
        try "directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
            .write(toFile: conf, atomically: true, encoding: .utf8)
        setenv("SOFTHSM2_CONF", conf, 1)
        return directory
    }

    private func copy(_ module: String, into directory: String, as name: String) throws -> String {
        let target = directory + "/" + name
        // The library itself, not a symbolic link to it (Debian's path is a relative link).
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: module).resolvingSymlinksInPath().path, toPath: target)
        return target
    }

    /// The HMAC key as a private, sensitive, non-extractable token object.
    private func importKey(_ value: SecretBytes, module: PKCS11Module, label: String, pin: SecretBytes) throws {
        let session = try module.openSession(slot: try module.findToken(.label(label)).slot)
        defer { try? session.close() }
        try session.login(.user, pin: pin)
        defer { try? session.logout() }
        _ = try session.createObject([
            .class(.secretKey), .keyType(.genericSecret), .token(true), .private(true), .sensitive(true), .extractable(false),
            .sign(true), .verify(true), .label("bench/hmac"), .value(value),
        ])
    }

    private func randomPIN() -> [UInt8] {
        let alphabet = Array("abcdefghijkmnopqrstuvwxyz23456789".utf8)
        return (0..<16).map { _ in alphabet.randomElement()! }
    }
}

/// Every PKCS#11 function of one module answers `CKR_DEVICE_REMOVED` while armed; `C_Finalize`
/// still works, as it does for a library whose device was pulled.
final class DeviceRemovedFault: PKCS11FaultInjector {
    let armed = Atomic<Bool>(false)

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        armed.load(ordering: .relaxed) && function != .finalize ? .deviceRemoved : nil
    }
}

private final class StopSignal: Sendable {
    let flag = Atomic<Bool>(false)
}

/// Outcomes of the load's calls and the times of successes (for the longest gap).
private final class LoadTally: Sendable {
    enum Outcome { case success, wrong, failed(String) }

    private struct State {
        var calls = 0
        var succeeded = 0
        var wrong = 0
        var failed = [String: Int]()
        var lastSuccess = Duration.zero
        var longestGap = Duration.zero
        var takenOut: Duration?
        var recovered: Duration?
    }

    private let state = Mutex(State())

    var calls: Int { state.withLock { $0.calls } }

    func record(_ outcome: Outcome, at time: Duration) {
        state.withLock { state in
            state.calls += 1
            switch outcome {
            case .success:
                state.succeeded += 1
                state.longestGap = max(state.longestGap, time - state.lastSuccess)
                state.lastSuccess = max(state.lastSuccess, time)
            case .wrong: state.wrong += 1
            case .failed(let code): state.failed[code, default: 0] += 1
            }
        }
    }

    func setTakenOut(_ after: Duration) { state.withLock { $0.takenOut = after } }
    func setRecovered(_ after: Duration) { state.withLock { $0.recovered = after } }

    func fill(_ report: inout TokenFailoverBenchCommand.Report, end: Duration) {
        state.withLock { state in
            report.callsMade = state.calls
            report.succeeded = state.succeeded
            report.wrongResults = state.wrong
            report.failedByCode = state.failed
            report.successRate = state.calls == 0 ? 0 : Double(state.succeeded) / Double(state.calls)
            report.longestGapMilliseconds = max(state.longestGap, end - state.lastSuccess).milliseconds
            report.takenOutAfterMilliseconds = state.takenOut?.milliseconds
            report.timeToRecoverMilliseconds = state.recovered?.milliseconds
        }
    }
}

extension Duration {
    fileprivate var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    fileprivate var milliseconds: Double { seconds * 1_000 }
}

import Composition
import CustosCommandLine
import Foundation
import HSM
import Logging
import PKCS11
import RPC
import Synchronization
import Verification

/// One of two tokens removed from both service instances for `--outage` seconds: every PKCS#11
/// function of the first token's module answers `CKR_DEVICE_REMOVED` (fault injection at the
/// binding, ``DeviceRemovedFault``), then works again.
///
/// Why in-process instances: the fault is injected through `PKCS11Module`'s fault hook, which
/// only code holding the loaded module can install. The bench builds both instances with
/// ``CustosRuntime`` exactly as `serve` does, but hands it the first token's module with the hook
/// installed; the release `custos serve` reads no switch that could arm one (an environment
/// switch would be one more way to break a production HSM from outside).
///
/// The two tokens: a private copy of the configured SoftHSM token directory (the configured
/// token, as it is, with its root keys and anchors) plus a replica initialised there and restored
/// from the setup's ceremony shares by `custos ceremony init-token` and `restore` — the way an
/// operator makes one (docs/operations.md, "Several tokens"). Each instance loads each token
/// through its own copy of the module (login state and `C_Initialize` are per loaded library).
/// The copy is removed afterwards; the configured token is never touched.
struct TokenLoss: FailoverFault {
    static let name = "token-loss"
    static let replicaLabel = "custos-bench-replica"

    let instances: [InProcessInstance]
    let fault: DeviceRemovedFault
    let outage: Duration
    private let times: Times

    private final class Times: Sendable {
        let values = Mutex([String: Double]())
    }

    var addresses: [String] { instances.map(\.address) }
    var measurements: [String: Double] { times.values.withLock { $0 } }

    static func start(_ setting: FailoverSetting) async throws -> TokenLoss {
        let configuration = setting.configuration
        let softhsm = setting.directory.appendingPathComponent("softhsm")
        try privateTokenDirectory(copying: configuration, into: softhsm)
        let replicaPIN = softhsm.appendingPathComponent("replica.pin").path
        try makeReplica(configuration: setting.configurationPath, source: configuration, userPINFile: replicaPIN, directory: softhsm)

        let logger = makeLogger()
        var settings = RPCSettings()
        if let notice = configuration.rpc?.noticeVersion { settings.noticeVersion = notice }
        settings.verificationAttempts = VerificationAttemptLimit(attempts: .max, window: .seconds(1))
        let endpoint = try RPCBenchCommand.loopbackEndpoint(configuration)
        let fault = DeviceRemovedFault()
        var instances = [InProcessInstance]()
        do {
            // One after the other: each start-up reconciles the replica's key-state list.
            for name in ["a", "b"] {
                let first = try copyModule(configuration.hsm.modulePath, into: softhsm, as: "token-a-\(name).so")
                let replica = try copyModule(configuration.hsm.modulePath, into: softhsm, as: "token-b-\(name).so")
                var instance = configuration
                instance.hsm.modulePath = first
                instance.hsm.tokens = [
                    .init(modulePath: first, tokenLabel: configuration.hsm.tokenLabel, userPINFile: configuration.hsm.userPINFile,
                          userPINEnvironment: configuration.hsm.userPINEnvironment, initArguments: configuration.hsm.initArguments),
                    .init(modulePath: replica, tokenLabel: replicaLabel, userPINFile: replicaPIN),
                ]
                let module = try PKCS11Module(path: first, initArguments: configuration.hsm.initArguments)
                module.installFaultInjector(fault)
                instances.append(try await InProcessInstance(configuration: instance, firstModule: module, endpoint: endpoint, settings: settings, logger: logger))
            }
        } catch {
            for instance in instances { await instance.stop() }
            throw error
        }
        return TokenLoss(instances: instances, fault: fault, outage: .milliseconds(Int64(setting.outageSeconds * 1000)), times: Times())
    }

    /// Removes the first token for ``outage``, then waits (60 s at most) until every instance
    /// serves on it again, recording when it was taken out and when it came back.
    func inject() async throws {
        let clock = ContinuousClock()
        fault.armed.store(true, ordering: .relaxed)
        let removed = clock.now
        while instances.contains(where: { $0.pool.tokenStatuses[0].inService }), clock.now - removed < outage {
            try await Task.sleep(for: .milliseconds(1))
        }
        if !instances.contains(where: { $0.pool.tokenStatuses[0].inService }) { record("token_taken_out_after_ms", clock.now - removed) }
        try await Task.sleep(until: removed + outage, clock: clock)
        fault.armed.store(false, ordering: .relaxed)
        let returned = clock.now
        record("token_removed_for_ms", returned - removed)
        while !instances.allSatisfy({ $0.pool.tokenStatuses[0].inService }), clock.now - returned < .seconds(60) {
            try await Task.sleep(for: .milliseconds(1))
        }
        if instances.allSatisfy({ $0.pool.tokenStatuses[0].inService }) { record("token_back_in_service_after_ms", clock.now - returned) }
    }

    func stop() async {
        fault.armed.store(false, ordering: .relaxed)
        for instance in instances { await instance.stop() }
    }

    private func record(_ name: String, _ duration: Duration) {
        times.values.withLock { $0[name] = BenchmarkLoop.microseconds(duration) / 1000 }
    }

    // MARK: Set-up

    /// A copy of the configured SoftHSM token directory, and `SOFTHSM2_CONF` pointing at it for
    /// this process and the ceremony commands it runs (before any module is loaded).
    private static func privateTokenDirectory(copying configuration: CustosConfiguration, into directory: URL) throws {
        guard let conf = configuration.hsm.softhsmConf ?? ProcessInfo.processInfo.environment["SOFTHSM2_CONF"],
              let text = try? String(contentsOfFile: conf, encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix("directories.tokendir") }),
              let tokens = line.split(separator: "=", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces)
        else {
            throw LocalError.failed("token-loss needs a SoftHSM token directory: hsm.softhsmConf (or SOFTHSM2_CONF) with directories.tokendir")
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let copy = directory.appendingPathComponent("tokens")
        // Without the trailing slash: swift-corelibs-foundation copies `dir/` into `<copy>name`.
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: tokens).standardizedFileURL.path, toPath: copy.path)
        let privateConf = directory.appendingPathComponent("softhsm2.conf").path
        try "directories.tokendir = \(copy.path)/\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
            .write(toFile: privateConf, atomically: true, encoding: .utf8)
        setenv("SOFTHSM2_CONF", privateConf, 1)
    }

    /// `custos ceremony init-token` and `restore` onto a replica in the private directory, from
    /// the share files of the setup's root-key ceremony (`<state>/ceremony/shares`; the same
    /// folder holds the escrow key's shares, another ceremony's, which `restore` refuses to mix).
    private static func makeReplica(configuration path: String, source: CustosConfiguration, userPINFile: String, directory: URL) throws {
        let ceremony = URL(fileURLWithPath: source.source).deletingLastPathComponent().appendingPathComponent("ceremony")
        let sharesFolder = ceremony.appendingPathComponent("shares")
        let shares = try FileManager.default.contentsOfDirectory(atPath: sharesFolder.path).filter { !$0.hasPrefix(".") }.sorted()
            .map { sharesFolder.appendingPathComponent($0).path }.filter(holdsRootKeys)
        guard !shares.isEmpty else { throw LocalError.failed("no share files in \(sharesFolder.path): run scripts/setup") }
        let soPIN = directory.appendingPathComponent("replica.so.pin").path
        for (file, bytes) in [(soPIN, 16), (userPINFile, 16)] {
            let alphabet = Array("abcdefghijkmnopqrstuvwxyz23456789".utf8)
            guard FileManager.default.createFile(
                atPath: file, contents: Data((0..<bytes).map { _ in alphabet.randomElement()! }), attributes: [.posixPermissions: 0o600]
            ) else { throw LocalError.failed("cannot write \(file)") }
        }
        let participants = ["--operator", "custos-bench", "--witness", "\(NSUserName())@\(ProcessInfo.processInfo.hostName)", "--transcript", directory.appendingPathComponent("transcript.jsonl").path]
        let token = ["--config", path, "--token-label", replicaLabel, "--user-pin-file", userPINFile]
        try runCustos(["ceremony", "init-token"] + token + participants + ["--label", replicaLabel, "--so-pin-file", soPIN], log: directory)
        try runCustos(["ceremony", "restore"] + token + participants + shares.flatMap { ["--share", $0] }, log: directory)
    }

    /// Whether a share file carries root keys (`custos/root/…` labels in its `keys`).
    private static func holdsRootKeys(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path),
              let share = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let keys = share["keys"] as? [[String: Any]] else { return false }
        return keys.contains { ($0["label"] as? String)?.hasPrefix("custos/root/") == true }
    }

    private static func runCustos(_ arguments: [String], log directory: URL) throws {
        let log = directory.appendingPathComponent("ceremony.log").path
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil, attributes: [.posixPermissions: 0o600]) }
        let output = FileHandle(forWritingAtPath: log)
        output?.seekToEndOfFile()
        let process = Process()
        process.executableURL = FailoverBenchCommand.custosBinary()
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw LocalError.failed("custos \(arguments.prefix(2).joined(separator: " ")) failed (exit \(process.terminationStatus)): \(text.suffix(2_000))")
        }
    }

    /// The library itself, not a symbolic link to it (Debian's path is a relative link).
    private static func copyModule(_ module: String, into directory: URL, as name: String) throws -> String {
        let target = directory.appendingPathComponent(name).path
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: module).resolvingSymlinksInPath().path, toPath: target)
        return target
    }
}

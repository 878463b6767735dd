import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Storage
import Testing

/// A real `kill -9` of `custos ceremony rotate-root` exactly between two of its steps (debug
/// builds stop there when `CUSTOS_CRASH_AT` names the step, ``StepFault``): the service still
/// starts on what the crash left, and the documented recovery (docs/ceremony.md) finishes the
/// rotation — every tenant key version computes what it computed before, one active version per
/// purpose, the token's and the database's root keys agree, and every blob names a KEK on the
/// token.
@Suite("Root-KEK rotation survives kill -9 between its steps", .serialized)
struct RootKEKRotationKillTests {
    /// What one tenant key version computed before the rotation.
    struct Fingerprint: Sendable {
        let tenant: TenantID
        let purpose: KeyPurpose
        let version: Int
        /// HMAC or PRF output; for `data`, a box sealed under the version.
        let output: [UInt8]
        let sealed: AESGCMSealedBox?
    }

    static let message = Array("custos root-KEK rotation".utf8)
    static let block = [UInt8](repeating: 0x5A, count: 16)

    /// What start-up does on the harness's token and schema: the root-key check against the
    /// database (a mismatch fails here), then a keyring on the keys it vouches for. Every session
    /// is closed first (a PKCS#11 login is per process, so no second pool can log in here): the
    /// keys unwrapped so far go, and every key comes from the blob its row holds now, as in a
    /// new process.
    static func startUp(_ harness: CustodyHarness) async throws -> TenantKeyring {
        try await harness.pool.resetSessions()
        let inventory = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service, logger: harness.logs.logger)
        return TenantKeyring(
            pool: harness.pool, database: harness.service, rootKeys: RootKeys(inventory: inventory), audit: harness.audit, logger: harness.logs.logger
        )
    }

    static func fingerprints(_ keyring: TenantKeyring, _ tenants: [TenantID]) async throws -> [Fingerprint] {
        var prints = [Fingerprint]()
        for tenant in tenants {
            for record in try await keyring.versions(tenant) {
                guard let usage = record.purpose.usage else { continue }
                let key = try await keyring.key(tenant, record.purpose, version: record.version).key
                let print: Fingerprint
                switch usage {
                case .hmac:
                    print = Fingerprint(tenant: tenant, purpose: record.purpose, version: record.version,
                                        output: try await keyring.pool.hmacSHA256(key: key, data: message), sealed: nil)
                case .encryptOnly:
                    print = Fingerprint(tenant: tenant, purpose: record.purpose, version: record.version,
                                        output: try await keyring.pool.encryptBlocksECB(key: key, blocks: block), sealed: nil)
                default:
                    print = Fingerprint(tenant: tenant, purpose: record.purpose, version: record.version,
                                        output: message, sealed: try await keyring.pool.sealAESGCM(key: key, plaintext: message))
                }
                prints.append(print)
            }
        }
        return prints
    }

    /// Every version computes what it did before (for `data`: opens what it sealed).
    static func expectSameOutputs(_ keyring: TenantKeyring, _ before: [Fingerprint], _ when: String) async throws {
        for print in before {
            let key = try await keyring.key(print.tenant, print.purpose, version: print.version).key
            let output: [UInt8] = if let sealed = print.sealed {
                try await keyring.pool.openAESGCM(key: key, box: sealed)
            } else if print.purpose.usage == .hmac {
                try await keyring.pool.hmacSHA256(key: key, data: message)
            } else {
                try await keyring.pool.encryptBlocksECB(key: key, blocks: block)
            }
            #expect(output == print.output, "\(when): \(print.purpose.rawValue)/v\(print.version) computes as before")
        }
    }

    /// `custos ceremony rotate-root` on the harness's token, schema and transcript.
    /// - Returns: the ended process and what it printed.
    static func rotateRoot(
        _ harness: CustodyHarness, config: String, _ arguments: [String], shares: [String], crashAt step: String? = nil
    ) async throws -> (process: Process, output: String) {
        let transcript = TestEnvironment.directory + "/\(harness.schema).ceremony/transcript.jsonl"
        let output = Pipe()
        let process = try ChildCustos.spawn(
            ["ceremony", "rotate-root", "--config", config, "--operator", "Test Operator", "--witness", "Test Witness", "--transcript", transcript]
                + arguments + shares.flatMap { ["--old-share", $0] },
            environment: step.map { ["CUSTOS_CRASH_AT": $0] } ?? [:], output: output
        )
        // Read to the end first: a full pipe would stop the child.
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        try await ChildCustos.waitForExit(process)
        return (process, String(decoding: printed, as: UTF8.self))
    }

    /// Per blob row, the root KEK version its row names.
    static func kekVersions(_ keyring: TenantKeyring, _ tenants: [TenantID]) async throws -> [Int] {
        var versions = [Int]()
        for tenant in tenants {
            versions += try await keyring.versions(tenant).filter { $0.wrappedKey != nil }.map(\.rootKEKVersion)
        }
        return versions
    }

    @Test("killed at each step of rotate-root: the service starts on what is left, the documented recovery finishes it", arguments: [
        "rotate-root.sharesWritten", "rotate-root.keysImported", "rotate-root.transcribed", "rotate-root.keysRecorded",
        "rewrap.rowSealed", "rewrap.rowStored", "rewrap.tenantDone", "rewrap.rowsDone",
    ])
    func rotateRootKilled(step: String) async throws {
        let harness = try await CustodyHarness.make("rootkill")
        let keyring = harness.keyring
        let acme = try await keyring.createTenant(label: "acme", actor: "officer").id
        let globex = try await keyring.createTenant(label: "globex", actor: "officer").id
        try await keyring.rotate(acme, .data, actor: "officer")
        try await keyring.rotate(acme, .pii, actor: "officer")
        let tenants = [acme, globex]
        // The service has started once (it records the root keys), and every version computes.
        let before = try await Self.fingerprints(try await Self.startUp(harness), tenants)
        #expect(before.count == 12)
        // A disabled version: its mark is under the row MAC, which the re-wrap recomputes.
        _ = try await keyring.disable(acme, .pii, version: 1, actor: "officer")

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory)
        let output = directory + "/rotation"
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let currentShares = Array(harness.sharePaths.prefix(2))
        let killed = try await Self.rotateRoot(
            harness, config: config, ["--threshold", "2", "--shares", "3", "--output", output], shares: currentShares, crashAt: step
        ).process
        #expect(ChildCustos.killedItself(killed), "rotate-root stopped itself at \(step)")

        // Start-up on what the crash left: the root-key check passes, every version still computes.
        let total = before.count
        let restarted = try await Self.startUp(harness)
        try await Self.expectSameOutputs(restarted, before.filter { !($0.tenant == acme && $0.purpose == .pii && $0.version == 1) }, "after the kill")
        let interrupted = try await Self.kekVersions(restarted, tenants)
        let moved = interrupted.filter { $0 == 2 }.count
        switch step {
        case "rewrap.rowStored": #expect(moved == 1, "the kill came after the first row")
        case "rewrap.tenantDone": #expect(moved > 1 && moved < total, "the kill came between the tenants")
        case "rewrap.rowsDone": #expect(moved == total, "the kill came after the last row")
        default: #expect(moved == 0, "no row moved before the kill")
        }

        // The documented recovery (docs/ceremony.md, "If rotate-root is interrupted").
        let recovery: Process
        switch step {
        case "rotate-root.sharesWritten":
            // Nothing reached the token: rotate again.
            recovery = try await Self.rotateRoot(
                harness, config: config, ["--threshold", "2", "--shares", "3", "--output", output], shares: currentShares
            ).process
        case "rotate-root.keysImported", "rotate-root.transcribed":
            // The new KEKs are on the token but not recorded: --resume adopts them with M of
            // their own share files (written before the import).
            let written = try FileManager.default.contentsOfDirectory(atPath: output).filter { $0.hasSuffix(".json") }.sorted()
            #expect(written.count == 3)
            // Without them, --resume moves nothing and says which set it left unused, and why.
            let unaware = try await Self.rotateRoot(harness, config: config, ["--resume"], shares: currentShares)
            #expect(unaware.process.terminationStatus == 0)
            #expect(unaware.output.contains("left unused") && unaware.output.contains(RootKeys.kekLabel(.data, version: 2)), "\(unaware.output)")
            #expect(try await Self.kekVersions(try await Self.startUp(harness), tenants).allSatisfy { $0 == 1 })
            recovery = try await Self.rotateRoot(harness, config: config, ["--resume"], shares: currentShares + written.prefix(2).map { output + "/" + $0 }).process
        default:
            recovery = try await Self.rotateRoot(harness, config: config, ["--resume"], shares: currentShares).process
        }
        #expect(recovery.terminationReason == .exit && recovery.terminationStatus == 0, "the recovery run succeeds")

        let recovered = try await Self.startUp(harness)
        #expect(try await Self.kekVersions(recovered, tenants) == Array(repeating: 2, count: total), "every blob is under root KEK v2")
        // The token's root keys and the database's record agree, and every blob's KEK is both.
        let inventory = try await RootKeyInventory.read(from: harness.pool)
        let recorded = try await recovered.recordedRootKeys()
        #expect(Set(inventory.entries.map(\.label)) == Set(recorded.keys), "every root key on the token is recorded, and only those")
        for entry in inventory.entries { #expect(recorded[entry.label] == entry.checkValue, "\(entry.label): same check value") }
        for tenant in tenants {
            let versions = try await recovered.versions(tenant)
            for record in versions where record.wrappedKey != nil {
                #expect(recorded[RootKeys.kekLabel(record.purpose, version: record.rootKEKVersion)] != nil)
            }
            for purpose in Set(versions.map(\.purpose)) {
                #expect(versions.filter { $0.purpose == purpose && $0.state == .active }.count == 1, "\(purpose.rawValue): one active version")
            }
        }
        // The disabled version's row is still authentic: enabling it works.
        _ = try await recovered.enable(acme, .pii, version: 1, actor: "officer")
        try await Self.expectSameOutputs(recovered, before, "after the recovery")
        let rewraps = try await harness.audit.tail(limit: 500).filter { $0.action == AuditAction.keyRewrap.rawValue }
        #expect(rewraps.count == total, "one key.rewrap entry per version moved, none twice")
        let transcript = CeremonyTranscript(path: TestEnvironment.directory + "/\(harness.schema).ceremony/transcript.jsonl")
        #expect(try await transcript.verify(pool: harness.pool).isIntact, "the transcript's chain and MACs hold")
        await harness.shutdown()
    }
}

import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Logging
import PKCS11
import SecureMemory
import Synchronization
import Testing

/// Replica tokens: `ceremony restore` from M-of-N shares onto a second token makes a replica the
/// start-up check accepts; a token with no root keys, or with a root of its own, is refused with
/// the token and the keys named (never a value). No database: the check compares tokens.
/// Serialized: it initialises tokens (process-wide token state).
@Suite("Replica tokens: restored from shares, checked at start-up", .serialized)
struct ReplicaTokenTests {
    let logs = LogCapture()

    struct Token {
        let label: String
        let pinFile: String
        let pool: SessionPool
    }

    /// A fresh token initialised by the ceremony's init-token step, with a started pool on it.
    func freshToken(_ name: String, directory: String, transcript: CeremonyTranscript, participants: CeremonyParticipants) async throws -> Token {
        let label = String("rep-\(name)-\(getpid())".prefix(32))
        let soPINFile = directory + "/\(name).so.pin", userPINFile = directory + "/\(name).user.pin"
        try writePrivateFile(soPINFile, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
        try writePrivateFile(userPINFile, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
        let module = TestToken.sharedModule
        let token = try TestToken.serializingInitialisation {
            try KeyCeremony.provisionToken(module: module, label: label, securityOfficerPIN: .file(path: soPINFile), userPIN: .file(path: userPINFile))
        }
        try await KeyCeremony.recordInitToken(token, module: module, participants: participants, configHash: "test-config", transcript: transcript)
        let pool = try SessionPool(
            configuration: HSMConfiguration(modulePath: TestToken.modulePath, token: .label(label), userPIN: .file(path: userPINFile)),
            logger: logs.logger
        )
        try await pool.start()
        return Token(label: label, pinFile: userPINFile, pool: pool)
    }

    /// A started pool over `first` and `replica`, each through a fresh copy of the module.
    func pair(_ first: Token, _ replica: Token) async throws -> SessionPool {
        let configuration = HSMConfiguration(
            modulePath: TestToken.modulePath, token: .label(first.label), userPIN: .file(path: first.pinFile),
            replicas: [TokenEndpoint(modulePath: TestToken.modulePath, token: .label(replica.label), userPIN: .file(path: replica.pinFile))]
        )
        let pool = try SessionPool(
            configuration: configuration, module: try TestToken.isolatedModule(), replicaModules: [try TestToken.isolatedModule()], logger: logs.logger
        )
        try await pool.start()
        return pool
    }

    @Test("restore onto a second token passes the replica check; an empty token and one with another root are refused by name")
    func replicaCheck() async throws {
        let directory = TestEnvironment.directory + "/replica-\(UUID().uuidString.prefix(8))"
        for folder in ["/shares", "/other-shares"] {
            try FileManager.default.createDirectory(atPath: directory + folder, withIntermediateDirectories: true)
        }
        let participants = try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"])
        let transcript = CeremonyTranscript(path: directory + "/transcript.jsonl")
        let expectedLabels = (RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 1) } + [RootKeys.macLabel(version: 1)]).sorted()

        let a = try await freshToken("a", directory: directory, transcript: transcript, participants: participants)
        let generated = try await KeyCeremony(pool: a.pool, participants: participants, configHash: "test-config", logger: logs.logger)
            .generateRoot(threshold: 2, shares: 3, outputDirectory: directory + "/shares", transcript: transcript)
        await a.pool.shutdown()

        // B before the restore: every root key is missing there.
        let b = try await freshToken("b", directory: directory, transcript: transcript, participants: participants)
        let empty = try await pair(a, b)
        let missing = await #expect(throws: ReplicaTokensDiffer.self) { try await ReplicaRootKeyCheck.verify(empty) }
        #expect(missing?.mismatches.map(\.label) == expectedLabels)
        #expect(missing?.mismatches.allSatisfy { $0.problem == .missing && $0.token == "label \"\(b.label)\"" } == true)
        await empty.shutdown()

        // B restored from two of the three custodians' shares: a replica.
        let restored = try await KeyCeremony(pool: b.pool, participants: participants, configHash: "test-config", logger: logs.logger)
            .restore(sharePaths: [generated.sharePaths[0], generated.sharePaths[2]], transcript: transcript)
        #expect(restored.keys.map(\.checkValue) == generated.keys.map(\.checkValue))
        await b.pool.shutdown()
        let replicas = try await pair(a, b)
        try await ReplicaRootKeyCheck.verify(replicas)
        // The same root MAC key on both tokens: the same MAC, whichever token answers.
        let mac = HSMKey.tokenObject(label: RootKeys.macLabel(version: 1))
        let data = Array("audit row".utf8)
        // On each token's own session (the first token's pool would route a plain HMAC to either).
        let macs = try await replicas.tokenPools.asyncMap { token in
            try await token.withTokenSession(.hmac) { session in try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: mac), data: data) }
        }
        #expect(macs[0] == macs[1])
        await replicas.shutdown()

        // C initialised separately, with a root of its own: every key differs.
        // (Another installation: its own transcript, MAC'd under its own root.)
        let otherTranscript = CeremonyTranscript(path: directory + "/other-transcript.jsonl")
        let c = try await freshToken("c", directory: directory, transcript: otherTranscript, participants: participants)
        let other = try await KeyCeremony(pool: c.pool, participants: participants, configHash: "test-config", logger: logs.logger)
            .generateRoot(threshold: 2, shares: 3, outputDirectory: directory + "/other-shares", transcript: otherTranscript)
        await c.pool.shutdown()
        let foreign = try await pair(a, c)
        let differs = await #expect(throws: ReplicaTokensDiffer.self) { try await ReplicaRootKeyCheck.verify(foreign) }
        #expect(differs?.mismatches.map(\.label) == expectedLabels)
        #expect(differs?.mismatches.allSatisfy { $0.problem == .differs && $0.token == "label \"\(c.label)\"" } == true)
        let message = differs.map(String.init(describing:)) ?? ""
        #expect(message.contains(c.label) && message.contains(RootKeys.macLabel(version: 1)))
        for key in other.keys + generated.keys {
            #expect(!message.lowercased().contains(key.checkValue.lowercased()), "the message names keys, never their check values")
        }
        await foreign.shutdown()
    }
}

/// The list of destroyed key versions (``KeyStateAnchor``, a token data object) is
/// written to every token, and reconciliation puts it back on a replica that lacks it: losing
/// any one token never loses a destruction.
@Suite("Replica tokens: the destruction anchor on every token", .serialized)
struct ReplicatedDestructionAnchorTests {
    @Test("a destruction is anchored on both tokens; a replica that lost the list gets it back at reconciliation")
    func anchorOnEveryToken() async throws {
        let harness = try await CustodyHarness.make("repanchor")
        // Token B restored from the harness's shares (2 of 3): a replica of the harness token.
        let replicated = try await ReplicaTokenPool.make(harness, replicaName: "repanchorb")
        let (moduleA, pool) = (replicated.moduleA, replicated.pool)
        try await ReplicaRootKeyCheck.verify(pool)
        let rootKeys = RootKeys(inventory: try await RootKeyCheck.verify(pool: pool, database: harness.service))
        let audit = AuditLog(pool: pool, database: harness.service, rootKeys: rootKeys, anchorPath: harness.anchorPath)
        let keyring = TenantKeyring(pool: pool, database: harness.service, rootKeys: rootKeys, audit: audit, logger: harness.logs.logger)

        let tenant = try await keyring.createTenant(label: "replicated", actor: "officer").id
        _ = try await keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
        try await keyring.destroy(tenant, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
        let anchored = try await pool.tokenPools.asyncMap { try await Self.anchorObjects($0) }
        #expect(anchored.allSatisfy { $0 >= 1 }, "the list is on every token: \(anchored)")

        // B loses its list (a replica restored from shares has none): reconciliation writes it again.
        _ = try await pool.tokenPools[1].withPersistentSession { session in
            for handle in try session.findObjects([.class(.data), .label(KeyStateAnchor.label)]) { try session.destroyObject(handle) }
        }
        #expect(try await Self.anchorObjects(pool.tokenPools[1]) == 0)
        _ = try await keyring.reconcile()
        #expect(try await Self.anchorObjects(pool.tokenPools[1]) >= 1)

        // The first token removed: audited actions go on (the audit anchor is written to the
        // tokens that answer), and the chain verifies once it is back.
        let removed = TokenRemoved()
        moduleA.installFaultInjector(removed)
        removed.armed.store(true, ordering: .relaxed)
        try await audit.append(tenant: tenant, actor: "officer", action: .certificateRevoke, target: "while-a-is-down", details: [:])
        removed.armed.store(false, ordering: .relaxed)
        // Token A's own pool re-initialises once its breaker's pause is over (bounded wait).
        var back = false
        for _ in 0..<500 where !back {
            back = (try? await pool.tokenPools[0].random(count: 1)) != nil
            if !back { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(back)
        try await audit.append(tenant: tenant, actor: "officer", action: .certificateRevoke, target: "after-a-returned", details: [:])
        let verification = try await audit.verify()
        #expect(verification.isIntact, "\(verification)")
        await pool.shutdown()
        await harness.shutdown()
    }

    static func anchorObjects(_ token: SessionPool) async throws -> Int {
        try await token.withPersistentSession { session in try session.findObjects([.class(.data), .label(KeyStateAnchor.label)]).count }
    }
}

/// Every function of one module answers `CKR_DEVICE_REMOVED` while armed (but `C_Finalize`).
final class TokenRemoved: PKCS11FaultInjector {
    let armed = Atomic<Bool>(false)

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        armed.load(ordering: .relaxed) && function != .finalize ? .deviceRemoved : nil
    }
}

extension Array where Element: Sendable {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results = [T]()
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

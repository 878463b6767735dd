import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Storage
import Synchronization
import Testing

/// Attacks on the anchors kept on every replica token (issue 13): the token holding the newest
/// value fails while another answers with an older one — it was out of service during audit
/// appends, or it came back restored from the custodians' shares or from an older backup while
/// the service ran — and a database writer (owner role, as in the other replay attacks) deletes
/// the newest audit entries or puts an older key row back.
/// Serialized: fault injection and token restores change process-wide token state.
@Suite("Replica token attacks: a stale token answering alone", .serialized)
struct ReplicaTokenAttackTests {
    /// The harness token (A) and a replica (B) restored from the harness's shares, in one pool,
    /// each through its own copy of the module with a fault injector that removes it when armed.
    struct Replicated {
        static func participants() throws -> CeremonyParticipants {
            try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"])
        }
        let harness: CustodyHarness
        let pool: SessionPool
        let labelB: String
        let soPINFileB: String
        let pinFileB: String
        let removeA = TokenRemoved()
        let removeB = TokenRemoved()
        let moduleB: PKCS11Module
        let audit: AuditLog
        let keyring: TenantKeyring

        static func make(_ name: String) async throws -> Replicated {
            let harness = try await CustodyHarness.make(name)
            // B with PINs kept in files (the SO PIN too: one test re-initialises B).
            let labelB = String("\(name)b-\(getpid())".prefix(32))
            let soPINFileB = TestEnvironment.directory + "/\(labelB).so.pin", pinFileB = TestEnvironment.directory + "/\(labelB).pin"
            try writePrivateFile(soPINFileB, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
            try writePrivateFile(pinFileB, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
            _ = try TestToken.serializingInitialisation {
                try TokenProvisioning.initializeToken(
                    module: TestToken.sharedModule, label: labelB, securityOfficerPIN: try PINSource.file(path: soPINFileB).read(),
                    userPIN: try PINSource.file(path: pinFileB).read()
                )
            }
            let poolB = try SessionPool(
                configuration: HSMConfiguration(modulePath: TestToken.modulePath, token: .label(labelB), userPIN: .file(path: pinFileB)),
                logger: harness.logs.logger
            )
            try await poolB.start()
            _ = try await KeyCeremony(pool: poolB, participants: try Self.participants(), configHash: "test", logger: harness.logs.logger)
                .restore(sharePaths: Array(harness.sharePaths.prefix(2)), transcript: CeremonyTranscript(path: TestEnvironment.directory + "/\(labelB).jsonl"))
            await poolB.shutdown()

            var configuration = harness.token.configuration()
            configuration.replicas = [TokenEndpoint(modulePath: TestToken.modulePath, token: .label(labelB), userPIN: .file(path: pinFileB))]
            let moduleA = try TestToken.isolatedModule(), moduleB = try TestToken.isolatedModule()
            let pool = try SessionPool(configuration: configuration, module: moduleA, replicaModules: [moduleB], logger: harness.logs.logger)
            try await pool.start()
            try await ReplicaRootKeyCheck.verify(pool)
            let rootKeys = RootKeys(inventory: try await RootKeyCheck.verify(pool: pool, database: harness.service))
            // No anchor file: the HSM anchor alone, as an instance whose own file lacks the other
            // instances' appends sees it.
            let audit = AuditLog(pool: pool, database: harness.service, rootKeys: rootKeys, anchorPath: nil)
            let keyring = TenantKeyring(pool: pool, database: harness.service, rootKeys: rootKeys, audit: audit, logger: harness.logs.logger)
            let replicated = Replicated(
                harness: harness, pool: pool, labelB: labelB, soPINFileB: soPINFileB, pinFileB: pinFileB, moduleB: moduleB, audit: audit,
                keyring: keyring
            )
            moduleA.installFaultInjector(replicated.removeA)
            moduleB.installFaultInjector(replicated.removeB)
            // Start-up: the list of key states goes onto B too.
            _ = try await keyring.reconcile()
            return replicated
        }

        /// Waits (bounded) until the token itself serves again after its fault was cleared (a
        /// persistent-session call never moves to another token).
        func waitUntilServing(_ index: Int) async throws {
            for _ in 0..<1_000 {
                if (try? await pool.tokenPools[index].withPersistentSession({ session in try session.generateRandom(count: 1) })) != nil { return }
                try await Task.sleep(for: .milliseconds(10))
            }
            Issue.record("token \(index) did not come back")
        }

        /// B re-made while it is out of service: re-initialised (same label and PINs), and by
        /// default given a root of its own by a ceremony — an operator who ran generate-root
        /// where restore was meant; without it, an empty partition.
        func remakeBWithAnotherRoot(ceremony: Bool = true) async throws {
            let module = TestToken.sharedModule, label = labelB
            let soPIN = try PINSource.file(path: soPINFileB).read(), userPIN = try PINSource.file(path: pinFileB).read()
            try TestToken.serializingInitialisation {
                try module.initToken(slot: try module.findToken(.label(label)).slot, securityOfficerPIN: soPIN, label: label)
                let session = try module.openSession(slot: try module.findToken(.label(label)).slot)
                defer { try? session.close() }
                try session.login(.securityOfficer, pin: soPIN)
                defer { try? session.logout() }
                try session.initPIN(userPIN)
            }
            guard ceremony else { return }
            let poolB = try SessionPool(
                configuration: HSMConfiguration(modulePath: TestToken.modulePath, token: .label(labelB), userPIN: .file(path: pinFileB)),
                logger: harness.logs.logger
            )
            try await poolB.start()
            let directory = TestEnvironment.directory + "/\(labelB)-other-root"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            _ = try await KeyCeremony(pool: poolB, participants: try Self.participants(), configHash: "test", logger: harness.logs.logger)
                .generateRoot(threshold: 2, shares: 3, outputDirectory: directory, transcript: CeremonyTranscript(path: directory + "/transcript.jsonl"))
            await poolB.shutdown()
        }

        /// The root MAC key, a message, and its MAC on the first token: what every call routed
        /// anywhere must answer.
        func rootMACOfFirstToken() async throws -> (key: HSMKey, data: [UInt8], expected: [UInt8]) {
            let key = HSMKey.tokenObject(label: RootKeys.macLabel(version: 1)), data = Array("audit row".utf8)
            return (key, data, try await pool.tokenPools[0].hmacSHA256(key: key, data: data))
        }

        /// Takes token `index` out of service as a failing device does: its removal is armed and
        /// `call` made until the pool has moved off it. The removal stays armed.
        func takeOut(_ index: Int, calling call: () async throws -> Void) async throws {
            (index == 0 ? removeA : removeB).armed.store(true, ordering: .relaxed)
            for _ in 0..<20 where pool.tokenStatuses[index].inService { try await call() }
            #expect(!pool.tokenStatuses[index].inService, "token \(index) is out of service")
        }

        /// B taken out, re-made while out (``remakeBWithAnotherRoot(ceremony:)``) and answering
        /// again; returns once a probe has run the return check on it.
        func remakeBWhileOut(ceremony: Bool = true, calling call: () async throws -> Void) async throws {
            try await takeOut(1, calling: call)
            try await remakeBWithAnotherRoot(ceremony: ceremony)
            removeB.armed.store(false, ordering: .relaxed)
            // B's own pool serves again (a probe's RNG call succeeds); the probes (every 250 ms)
            // would bring it back without the check.
            try await waitUntilServing(1)
            for _ in 0..<80 where !harness.logs.text.contains("kept out of service") { try await Task.sleep(for: .milliseconds(50)) }
            #expect(harness.logs.text.contains("kept out of service"), "a probe ran the return check on B")
        }

        /// The raw values of B's list of key states, read as the holder of its PIN would.
        func listOnB() async throws -> [[UInt8]] {
            let object = keyring.keyStateAnchor.object
            return try await pool.tokenPools[1].withPersistentSession { session in try object.values(in: session) }
        }

        /// Replaces B's list with `values` (none: a token restored from shares; older ones: a
        /// token restored from a file backup of the token).
        func putListOnB(_ values: [[UInt8]]) async throws {
            let object = keyring.keyStateAnchor.object
            try await pool.tokenPools[1].withPersistentSession { session in
                _ = try object.destroyAll(in: session)
                for value in values { try object.replace(with: value, in: session) }
            }
        }

        func shutdown() async {
            removeA.armed.store(false, ordering: .relaxed)
            removeB.armed.store(false, ordering: .relaxed)
            await pool.shutdown()
            await harness.shutdown()
        }
    }

    /// The tenant's data key v1 disabled by an officer, then its row from before the disable
    /// put back by the database writer.
    static func disableAndReplay(_ replicated: Replicated, _ tenant: TenantID) async throws {
        let keyring = replicated.keyring
        let before = try #require(try await keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 })
        try await keyring.disable(tenant, .data, version: 1, actor: "officer")
        try await replicated.harness.ownerSQL(tenant: tenant, """
            UPDATE key_versions SET disabled_at = NULL, row_mac = \(Data(before.rowMAC)) WHERE purpose = 'data' AND version = 1
            """)
    }

    static func isDisabled(_ error: any Error, _ tenant: TenantID) -> Bool {
        if case CustodyError.keyDisabled(tenant, .data, 1) = error { true } else { false }
    }

    @Test("token A (holding the list) fails while B answers without a list (restored from shares meanwhile): a replayed row of a disabled key stays refused")
    func replicaWithoutListAnsweringAlone() async throws {
        let replicated = try await Replicated.make("repnolist")
        let tenant = try await replicated.keyring.createTenant(label: "acme", actor: "officer").id
        try await Self.disableAndReplay(replicated, tenant)
        try await replicated.putListOnB([])
        replicated.removeA.armed.store(true, ordering: .relaxed)
        // The running keyring saw the list with the disable: it does not forget it.
        replicated.keyring.invalidate(prefix: "")
        await #expect { _ = try await replicated.keyring.key(tenant, .data, version: 1) } throws: { Self.isDisabled($0, tenant) }
        // A keyring that never saw the list (another instance started since) cannot tell a
        // token that never had one from one restored meanwhile: it refuses, retryably.
        let fresh = TenantKeyring(
            pool: replicated.pool, database: replicated.harness.service, rootKeys: replicated.keyring.rootKeys,
            audit: replicated.audit, logger: replicated.harness.logs.logger
        )
        await #expect { _ = try await fresh.key(tenant, .data, version: 1) } throws: { error in
            switch error {
            case let error as HSMError: error.isRetryable
            case CustodyError.hsm(let error): error.isRetryable
            default: false
            }
        }
        // A back: the list is read from it again, and the version is refused by every keyring.
        replicated.removeA.armed.store(false, ordering: .relaxed)
        try await replicated.waitUntilServing(0)
        fresh.invalidate(prefix: "")
        await #expect { _ = try await fresh.key(tenant, .data, version: 1) } throws: { Self.isDisabled($0, tenant) }
        await replicated.shutdown()
    }

    @Test("token A fails while B answers with an older list (restored from a backup of the token): the running keyring keeps the disable")
    func replicaWithOlderListAnsweringAlone() async throws {
        let replicated = try await Replicated.make("repoldlist")
        let tenant = try await replicated.keyring.createTenant(label: "acme", actor: "officer").id
        let older = try await replicated.listOnB()
        #expect(!older.isEmpty, "B held a list before the disable")
        try await Self.disableAndReplay(replicated, tenant)
        try await replicated.putListOnB(older)
        replicated.removeA.armed.store(true, ordering: .relaxed)
        replicated.keyring.invalidate(prefix: "")
        await #expect { _ = try await replicated.keyring.key(tenant, .data, version: 1) } throws: { Self.isDisabled($0, tenant) }
        await replicated.shutdown()
    }

    @Test("B out of service during audit appends, back, then A fails: entries deleted since B's anchor are still found, and appends stop")
    func staleAuditAnchorAnsweringAlone() async throws {
        let replicated = try await Replicated.make("repaudit")
        let audit = replicated.audit
        func append(_ target: String) async throws {
            _ = try await audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: target, details: [:])
        }
        try await append("on-both-1")
        try await append("on-both-2")
        let onBoth = try #require(try await audit.verify().hsmAnchoredSeq)

        replicated.removeB.armed.store(true, ordering: .relaxed)
        for index in 1...3 { try await append("only-on-a-\(index)") }
        replicated.removeB.armed.store(false, ordering: .relaxed)
        try await replicated.waitUntilServing(1)

        replicated.removeA.armed.store(true, ordering: .relaxed)
        try await replicated.harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq > \(onBoth)")
        let verification = try await audit.verify()
        #expect(!verification.isIntact, "the three deleted entries are found: \(verification)")
        #expect(verification.hsmAnchoredSeq == onBoth + 3, "\(verification)")
        await #expect {
            try await append("over-the-gap")
        } throws: { error in
            if case CustodyError.auditLogBehindAnchor(anchoredSeq: onBoth + 3, logSeq: onBoth) = error { true } else { false }
        }
        await replicated.shutdown()
    }

    @Test("B re-made with another root while out of service answers the probe again: it stays out, and every MAC is the first token's")
    func replicaRemadeWithAnotherRoot() async throws {
        let replicated = try await Replicated.make("repremade")
        let pool = replicated.pool
        let (mac, data, expected) = try await replicated.rootMACOfFirstToken()

        try await replicated.remakeBWhileOut { () async throws in
            #expect(try await pool.hmacSHA256(key: mac, data: data) == expected, "moved to A")
        }
        #expect(!pool.tokenStatuses[1].inService, "a token with another root is kept out")
        var wrong = 0
        for _ in 0..<40 {
            if try await pool.hmacSHA256(key: mac, data: data) != expected { wrong += 1 }
        }
        #expect(wrong == 0, "\(wrong) of 40 root MACs came from another root")
        await replicated.shutdown()
    }

    @Test("A fails while B, re-made with another root, is kept out: no call falls back to B — keyed calls fail rather than answer with B's root, and the health probe's random-number call fails")
    func noFallbackToTokenWithOtherKeys() async throws {
        let replicated = try await Replicated.make("repnofall")
        let pool = replicated.pool
        let (mac, data, expected) = try await replicated.rootMACOfFirstToken()

        try await replicated.remakeBWhileOut { _ = try await pool.hmacSHA256(key: mac, data: data) }

        // Now A fails too: no token is in service, and B answers anything sent to it.
        try await replicated.takeOut(0) { _ = try? await pool.hmacSHA256(key: mac, data: data) }
        #expect(!pool.tokenStatuses[1].inService)
        var fromOtherRoot = 0
        for _ in 0..<20 {
            if let answer = try? await pool.hmacSHA256(key: mac, data: data), answer != expected { fromOtherRoot += 1 }
        }
        #expect(fromOtherRoot == 0, "\(fromOtherRoot) of 20 root MACs came from B's other root")
        // HSMHealthMonitor's probe: an answer here would keep the instance SERVING.
        await #expect(throws: HSMError.self) { _ = try await pool.random(count: 1) }

        replicated.removeA.armed.store(false, ordering: .relaxed)
        try await replicated.waitUntilServing(0)
        #expect(try await pool.hmacSHA256(key: mac, data: data) == expected, "A serves again")
        await replicated.shutdown()
    }

    @Test("B re-made with another root and kept out: a new v1a key is refused before any token gets its seed, and a v1a key A lost is not looked for on B (no false tamper alarm from B's other MAC key)")
    func v1aKeysStayOffTokenWithOtherKeys() async throws {
        let replicated = try await Replicated.make("repv1a")
        let pool = replicated.pool
        let webhooks = WebhookSigner(pool: pool, keyring: replicated.keyring, audit: replicated.audit, trustedEscrowKeys: replicated.harness.trustedEscrowKeys)
        let tenant = try await replicated.keyring.createTenant(label: "v1a", actor: "officer").id
        _ = try await webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        let label = try #require(try await replicated.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
        let (mac, data, _) = try await replicated.rootMACOfFirstToken()
        try await replicated.remakeBWhileOut { _ = try await pool.hmacSHA256(key: mac, data: data) }
        #expect(pool.tokenStatuses[1].keysInDoubt)

        // A seed imported onto B would be in the hands of whoever re-made it.
        func privateKeys(_ index: Int) async throws -> Int {
            try await pool.tokenPools[index].withPersistentSession { try $0.findObjects([.class(.privateKey)], limit: 1_000).count }
        }
        let (onA, onB) = (try await privateKeys(0), try await privateKeys(1))
        await #expect(throws: CustodyError.self) { _ = try await webhooks.createEd25519Key(tenant: tenant, actor: "officer") }
        let (afterA, afterB) = (try await privateKeys(0), try await privateKeys(1))
        #expect(afterA == onA && afterB == onB, "no token got a seed")
        // Whoever re-made B pins there an escrow key the database lacks: not read from B.
        let object = replicated.keyring.escrowKeyAnchor.object
        let planted = try #require(EscrowKeyAnchor.Pin(bytes: [0, 0, 0, 0, 0, 0, 0, 99] + [UInt8](repeating: 1, count: 32)))
        try await pool.tokenPools[1].withPersistentSession { session in try object.replace(with: planted.bytes, in: session) }
        #expect(try await replicated.keyring.pinnedEscrowKey(trusting: replicated.harness.trustedEscrowKeys) != nil)

        // A loses the key pair (its user PIN destroys it): B, with another root's MAC key, would
        // refuse the row as tampered.
        try await pool.tokenPools[0].withPersistentSession { session in
            for handle in try session.findObjects([.label(label)], limit: 4) { try session.destroyObject(handle) }
        }
        do {
            _ = try await webhooks.signatureHeader(tenant: tenant, id: "msg_doubt", timestamp: 1_700_000_000, body: Array("{}".utf8))
            Issue.record("signed without the key on any trusted token")
        } catch {
            if case CustodyError.rowTampered = error { Issue.record("a false tamper alarm: \(error)") }
        }
        await replicated.shutdown()
    }

    @Test("B comes back while A, still counted in service, has just failed: B's check cannot be made — B stays out without doubt, the call A fails moves to B, and B's next check (no token in service: the start-up keys) brings it back")
    func returnCheckWhileReferenceFails() async throws {
        let replicated = try await Replicated.make("repreffail")
        let pool = replicated.pool
        let (mac, data, expected) = try await replicated.rootMACOfFirstToken()
        try await replicated.takeOut(1) { () async throws in #expect(try await pool.hmacSHA256(key: mac, data: data) == expected) }
        // A fails, and no call has found out yet: it is still counted in service.
        replicated.removeA.armed.store(true, ordering: .relaxed)
        replicated.removeB.armed.store(false, ordering: .relaxed)
        try await replicated.waitUntilServing(1)
        let probes = pool.tokenStatuses[1].probesWhileOut
        for _ in 0..<100 where pool.tokenStatuses[1].probesWhileOut < probes + 2 { try await Task.sleep(for: .milliseconds(50)) }
        #expect(!pool.tokenStatuses[1].keysInDoubt, "B's keys are not in doubt for A's silence")
        #expect(try await pool.hmacSHA256(key: mac, data: data) == expected, "answered by B")
        for _ in 0..<100 where !pool.tokenStatuses[1].inService { try await Task.sleep(for: .milliseconds(50)) }
        #expect(pool.tokenStatuses[1].inService, "B is back")
        await replicated.shutdown()
    }

    @Test("B re-made with another root answers its probe but fails every read of its root keys: kept out in doubt, so when A fails no call falls back to B's root")
    func unreadableReplicaKeysAreDoubted() async throws {
        let replicated = try await Replicated.make("repunread")
        let pool = replicated.pool
        let (mac, data, expected) = try await replicated.rootMACOfFirstToken()
        try await replicated.takeOut(1) { () async throws in #expect(try await pool.hmacSHA256(key: mac, data: data) == expected) }
        try await replicated.remakeBWithAnotherRoot()
        // B answers again (the probe's random bytes), but no attribute read.
        replicated.moduleB.installFaultInjector(AttributeReadsFail())
        for _ in 0..<100 where !pool.tokenStatuses[1].keysInDoubt { try await Task.sleep(for: .milliseconds(50)) }
        #expect(pool.tokenStatuses[1].keysInDoubt && !pool.tokenStatuses[1].inService)
        try await replicated.takeOut(0) { _ = try? await pool.hmacSHA256(key: mac, data: data) }
        var fromOtherRoot = 0
        for _ in 0..<20 {
            if let answer = try? await pool.hmacSHA256(key: mac, data: data), answer != expected { fromOtherRoot += 1 }
        }
        #expect(fromOtherRoot == 0, "\(fromOtherRoot) of 20 root MACs came from B's other root")
        await replicated.shutdown()
    }

    @Test("a root key added to both tokens after start-up (rotate-root, then its shares restored onto B), then each token fails once: each comes back")
    func rootKeyAddedThenBlips() async throws {
        let replicated = try await Replicated.make("reprotated")
        let pool = replicated.pool
        let added = KeyTemplate.rootMAC(
            label: RootKeys.macLabel(version: 2), id: (0..<16).map { _ in UInt8.random(in: 0 ... 255) },
            value: SecretBytes((0..<32).map { _ in UInt8.random(in: 0 ... 255) })
        )
        for token in pool.tokenPools { try await token.withPersistentSession { session in _ = try session.createObject(added) } }
        let (mac, data, expected) = try await replicated.rootMACOfFirstToken()
        for (index, removal) in [(0, replicated.removeA), (1, replicated.removeB)] {
            try await replicated.takeOut(index) { () async throws in #expect(try await pool.hmacSHA256(key: mac, data: data) == expected) }
            removal.armed.store(false, ordering: .relaxed)
            try await replicated.waitUntilServing(index)
            for _ in 0..<80 where !pool.tokenStatuses[index].inService { try await Task.sleep(for: .milliseconds(50)) }
            #expect(pool.tokenStatuses[index].inService, "token \(index) is back (its return check passed)")
        }
        #expect(try await pool.hmacSHA256(key: mac, data: data) == expected)
        await replicated.shutdown()
    }

    @Test("B re-made empty while out of service (its partition re-initialised): it stays out, and audit appends go on")
    func emptyReplicaDoesNotStopAudit() async throws {
        let replicated = try await Replicated.make("repempty")
        let pool = replicated.pool
        func append(_ target: String) async throws {
            _ = try await replicated.audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: target, details: [:])
        }
        try await append("on-both")
        try await replicated.remakeBWhileOut(ceremony: false) { try await append("b-failing") }
        #expect(!pool.tokenStatuses[1].inService, "an empty token is kept out")
        for index in 1...3 { try await append("after-the-remake-\(index)") }
        #expect(try await replicated.audit.verify().isIntact)
        await replicated.shutdown()
    }

    @Test("a second root MAC key planted on B under the same label with B's user PIN: B fails the replica check, by label")
    func duplicateRootKeyOnReplica() async throws {
        let replicated = try await Replicated.make("repdup")
        let label = RootKeys.macLabel(version: 1)
        let planted = KeyTemplate.rootMAC(
            label: label, id: (0..<16).map { _ in UInt8.random(in: 0 ... 255) }, value: SecretBytes((0..<32).map { _ in UInt8.random(in: 0 ... 255) })
        )
        try await replicated.pool.tokenPools[1].withPersistentSession { session in _ = try session.createObject(planted) }
        let refused = await #expect(throws: ReplicaTokensDiffer.self) { try await ReplicaRootKeyCheck.verify(replicated.pool) }
        #expect(refused?.mismatches == [ReplicaKeyMismatch(token: "label \"\(replicated.labelB)\"", label: label, problem: .duplicated)])
        await replicated.shutdown()
    }

    @Test("a disable whose list write reaches A but not B (B fails mid-change, as a crash between the tokens would leave it): refused, the version stays refused, and repeating it brings B level")
    func listWrittenToOneTokenOnly() async throws {
        let replicated = try await Replicated.make("replistonce")
        let keyring = replicated.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        replicated.removeB.armed.store(true, ordering: .relaxed)
        await #expect(throws: (any Error).self) { try await keyring.disable(tenant, .data, version: 1, actor: "officer") }
        let row = try #require(try await keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 })
        #expect(row.disabledAt == nil, "the change did not commit")
        keyring.invalidate(prefix: "")
        await #expect { _ = try await keyring.key(tenant, .data, version: 1) } throws: { Self.isDisabled($0, tenant) }

        replicated.removeB.armed.store(false, ordering: .relaxed)
        try await replicated.waitUntilServing(1)
        keyring.invalidate(prefix: "")
        await #expect { _ = try await keyring.key(tenant, .data, version: 1) } throws: { Self.isDisabled($0, tenant) }
        try await keyring.disable(tenant, .data, version: 1, actor: "officer")
        let object = keyring.keyStateAnchor.object
        var lists = [[[UInt8]]]()
        for token in replicated.pool.tokenPools {
            lists.append(try await token.withPersistentSession { session in try object.values(in: session) })
        }
        #expect(lists.count == 2 && lists[0] == lists[1] && !lists[0].isEmpty, "both tokens hold the same list")
        await replicated.shutdown()
    }

    @Test("a second root MAC key planted on B after start-up, met when B's pool logs in again: B is taken out as the wrong token and every call answers on A")
    func duplicateRootKeyPlantedWhileServing() async throws {
        let replicated = try await Replicated.make("repdupnow")
        let pool = replicated.pool
        let label = RootKeys.macLabel(version: 1)
        let mac = HSMKey.tokenObject(label: label)
        let data = Array("audit row".utf8)
        let expected = try await pool.hmacSHA256(key: mac, data: data)
        let planted = KeyTemplate.rootMAC(
            label: label, id: (0..<16).map { _ in UInt8.random(in: 0 ... 255) }, value: SecretBytes((0..<32).map { _ in UInt8.random(in: 0 ... 255) })
        )
        try await pool.tokenPools[1].withPersistentSession { session in _ = try session.createObject(planted) }
        // B's next signature finds its login gone: its pool logs in again and resolves its keys anew.
        let loginLost = LoginLostOnce()
        replicated.moduleB.installFaultInjector(loginLost)
        var failed = 0
        var firstError: (any Error)?
        for _ in 0..<40 {
            do {
                #expect(try await pool.hmacSHA256(key: mac, data: data) == expected)
            } catch {
                failed += 1
                firstError = firstError ?? error
            }
        }
        // B finds the label twice (`HSMError.duplicateKey`) while A answers: B is the wrong
        // token, taken out, and the call runs on A. (A key no token finds takes none out.)
        #expect(failed == 0, "\(failed) of 40 calls failed on B, first with \(String(describing: firstError))")
        // The audit anchor goes onto every token: B's duplicate label used to fail every append
        // (and with it every audited action) on every instance.
        _ = try await replicated.audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: "after-the-plant", details: [:])
        let statuses = pool.tokenStatuses
        #expect(statuses[0].inService && statuses[0].takenOut == 0)
        #expect(statuses[1].takenOut >= 1 && statuses[1].lastErrorClass == TokenStatus.wrongTokenClass)
        await #expect(throws: HSMError.self) { _ = try await pool.hmacSHA256(key: HSMKey.tokenObject(label: RootKeys.macLabel(version: 99)), data: data) }
        #expect(pool.tokenStatuses[0].takenOut == 0, "a key no token holds takes no token out")
        await replicated.shutdown()
    }
}

/// `CKR_USER_NOT_LOGGED_IN` for the first `C_Sign` after it is installed (the token logged the
/// pool out), then nothing.
/// Every `C_GetAttributeValue` answers `CKR_ATTRIBUTE_TYPE_INVALID`; everything else behaves.
final class AttributeReadsFail: PKCS11FaultInjector {
    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? { function == .getAttributeValue ? .attributeTypeInvalid : nil }
}

final class LoginLostOnce: PKCS11FaultInjector {
    let pending = Atomic<Bool>(true)

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        function == .sign && pending.exchange(false, ordering: .relaxed) ? .userNotLoggedIn : nil
    }
}

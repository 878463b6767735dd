import Ceremony
import Composition
import Crypto
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Logging
import PKCS11
import SecureMemory
import Testing

/// Attack review of issue 13, round 3 (docs/threat-model.md): v1a keys held on several tokens
/// and the escrow of their seeds, against a holder of a token's user PIN and a database writer
/// (owner role). Each test failed on the code before its fix. Serialized: fault injection and
/// token restores change process-wide token state.
@Suite("Attack review of issue 13, round 3: webhook keys on several tokens, the escrow pin", .serialized)
struct WebhookKeyAttackRound3Tests {
    static let timestamp: Int64 = 1_700_000_000
    static let body = Array(#"{"type":"verification.completed"}"#.utf8)

    static func participants() throws -> CeremonyParticipants {
        try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"])
    }

    /// With `token`'s user PIN: the private key under `label` destroyed (versions are
    /// destroyable) and a key pair of the attacker's generated under the same label.
    static func replaceKey(label: String, on token: SessionPool) async throws {
        try await token.withPersistentSession { session in
            for handle in try session.findObjects([.class(.privateKey), .label(label)]) { try session.destroyObject(handle) }
            let templates = KeyTemplate.ed25519(label: label, id: [0x0A, 0x77], token: true)
            _ = try session.generateKeyPair(.ecEdwardsKeyPairGen, publicTemplate: templates.public, privateTemplate: templates.private)
        }
    }

    static func verifies(_ header: String, publicKey: String) throws -> Bool {
        do {
            try WebhookVerifier(publicKeys: [try StandardWebhooks.decodePublicKey(publicKey)]).verify(
                id: "msg_1", timestamp: String(timestamp), signatureHeader: header, body: body, now: timestamp
            )
            return true
        } catch {
            return false
        }
    }

    @Test("a key of the attacker's under a v1a label (user PIN): no signature for another key leaves the service; the other token signs instead, and for a key missing on the first token")
    func tokenKeyReplacedUnderLabel() async throws {
        let harness = try await CustodyHarness.make("atk3sign")
        let replicated = try await ReplicaTokenPool.make(harness, replicaName: "atk3signb")
        let pool = replicated.pool
        let services = try await replicated.services(harness)
        let (keyring, webhooks) = (services.keyring, services.webhooks)
        // As start-up does: the list of key states on both tokens (else refused while A is down).
        _ = try await keyring.reconcile()
        var made = [(tenant: TenantID, publicKey: String, label: String)]()
        for name in ["onb", "ona", "missing"] {
            let tenant = try await keyring.createTenant(label: name, actor: "officer").id
            let (_, publicKey) = try await webhooks.createEd25519Key(tenant: tenant, actor: "officer")
            let label = try #require(try await keyring.versions(tenant).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
            made.append((tenant, publicKey, label))
        }
        let keys = made
        let sign = { (tenant: TenantID) in
            try await webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: Self.timestamp, body: Self.body)
        }

        // 1. B's key replaced; A removed, so the fallback goes to B: nothing signed with the
        // attacker's key leaves (before: a header whose v1a entry is another key's).
        try await Self.replaceKey(label: keys[0].label, on: pool.tokenPools[1])
        let removed = TokenRemoved()
        replicated.moduleA.installFaultInjector(removed)
        removed.armed.store(true, ordering: .relaxed)
        do {
            let header = try await sign(keys[0].tenant)
            #expect(try Self.verifies(header, publicKey: keys[0].publicKey), "a v1a signature for another key left the service")
        } catch {
            #expect(harness.logs.text.contains("does not sign for its row's public key"), "\(error)")
        }
        removed.armed.store(false, ordering: .relaxed)
        // A's pool re-initialises once its breaker's pause is over (bounded wait).
        var header: String?
        for _ in 0..<500 where header == nil {
            header = try? await sign(keys[0].tenant)
            if header == nil { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(try Self.verifies(try #require(header), publicKey: keys[0].publicKey), "A, back, signs with the tenant's key")

        // 2. A's key replaced: B's signs (before: A's signature for the attacker's key went out).
        try await Self.replaceKey(label: keys[1].label, on: pool.tokenPools[0])
        #expect(try Self.verifies(try await sign(keys[1].tenant), publicKey: keys[1].publicKey))

        // 3. A's key gone (a replacement token before `restore-webhook-keys`): B signs (before:
        // every call failed with the key not found while B held it).
        try await pool.tokenPools[0].withPersistentSession { session in
            for handle in try session.findObjects([.class(.privateKey), .label(keys[2].label)]) { try session.destroyObject(handle) }
        }
        #expect(try Self.verifies(try await sign(keys[2].tenant), publicKey: keys[2].publicKey))
        await pool.shutdown()
        await harness.shutdown()
    }

    @Test("the owner deletes the newest escrow key so that seeds go to the older one: creation refused; a new escrow key takes a version above the pinned one")
    func newestEscrowKeyDeleted() async throws {
        let harness = try await CustodyHarness.make("atk3roll")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let directory = TestEnvironment.directory + "/\(harness.schema).escrow2"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ceremony = KeyCeremony(pool: harness.pool, participants: try Self.participants(), configHash: "test", logger: harness.logs.logger)
        let transcript = CeremonyTranscript(path: directory + "/transcript.jsonl")
        // Escrow key v1 replaced by v2 (say v1's shares leaked).
        let second = try await ceremony.generateEscrow(threshold: 2, shares: 3, outputDirectory: directory, transcript: transcript, keyring: harness.keyring)
        #expect(second.escrowKeyVersion == 2)
        // As officers do after each generate-escrow: its fingerprint into config.json.
        var trusted = harness.trustedEscrowKeys.union([second.fingerprint])
        #expect(try await harness.keyring.pinnedEscrowKey(trusting: trusted)?.version == 2)

        // The owner deletes v2: the MACs of what is left all verify.
        try await harness.ownerSQL(tenant: nil, "DELETE FROM escrow_keys WHERE version = 2")
        let refused = await #expect(throws: CustodyError.self) {
            _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        }
        #expect(refused.map { if case .escrowKeyTampered(version: 2) = $0 { true } else { false } } == true, "\(String(describing: refused))")
        #expect(try await harness.keyring.seedEscrows(tenant).isEmpty, "nothing sealed to the older escrow key")
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty)

        // Officers make a new escrow key (as after restoring the database from a backup): it
        // takes v3, not the pinned v2, and sealing resumes to it.
        let third = try await ceremony.generateEscrow(threshold: 2, shares: 3, outputDirectory: directory, transcript: transcript, keyring: harness.keyring)
        #expect(third.escrowKeyVersion == 3)
        trusted.insert(third.fingerprint)
        let configured = WebhookSigner(pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: trusted)
        _ = try await configured.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(try await harness.keyring.seedEscrows(tenant).map(\.escrowKeyVersion) == [3])

        // The pin lost on the token (a crash before it was written, a token restored from the
        // root shares): the next seal writes it again, so a later deletion is still found.
        try await harness.pool.withPersistentSession { session in
            for handle in try session.findObjects([.class(.data), .label(EscrowKeyAnchor.label)]) { try session.destroyObject(handle) }
        }
        #expect(try await harness.keyring.pinnedEscrowKey(trusting: trusted)?.version == 3)
        try await harness.ownerSQL(tenant: tenant, "DELETE FROM key_version_escrows")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM escrow_keys WHERE version = 3")
        await #expect(throws: CustodyError.self) { _ = try await harness.keyring.pinnedEscrowKey(trusting: trusted) }
        await harness.shutdown()
    }

    @Test("a replica whose module has no Ed25519 turns v1a off (before: on, judged by the first token alone, every creation failing at the replica)")
    func replicaWithoutEd25519() async throws {
        let first = try TestToken.make("atk3eda"), second = try TestToken.make("atk3edb")
        var configuration = first.configuration()
        configuration.replicas = [TokenEndpoint(modulePath: TestToken.modulePath, token: .label(second.label), userPIN: .file(path: second.pinFile))]
        let replicaModule = try TestToken.isolatedModule()
        let pool = try SessionPool(
            configuration: configuration, module: try TestToken.isolatedModule(), replicaModules: [replicaModule], logger: Logger(label: "test")
        )
        try await pool.start()
        #expect(try await CustosRuntime.requireCustodyCapabilities(pool) == true)
        // As on a module without CKM_EDDSA; no check custody needs signs with C_SignInit.
        replicaModule.installFaultInjector(RandomFaults([.signInit: [(.mechanismInvalid, 1)]]))
        #expect(try await CustosRuntime.requireCustodyCapabilities(pool) == false)
        replicaModule.installFaultInjector(nil)
        await pool.shutdown()
    }

    @Test("the user PIN (to compute the root MAC) plus the owner role plant a newer escrow key: refused as not in config.json, nothing made or sealed; a second escrow key of the custodians', once configured, is used (before: every new v1a seed opened for the attacker)")
    func escrowKeyPinnedWithUserPIN() async throws {
        let harness = try await CustodyHarness.make("atk3pin")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let attacker = Curve25519.KeyAgreement.PrivateKey()
        let publicKey = Array(attacker.publicKey.rawRepresentation)
        // The root MAC key signs whatever the user PIN asks: the row is as the ceremony makes it.
        let mac = try await harness.pool.hmacSHA256(
            key: .tokenObject(label: RootKeys.macLabel(version: 1)),
            data: TenantKeyring.escrowKeyMessage(version: 2, publicKey: publicKey, ceremonyID: "forged")
        )
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO escrow_keys (version, public_key, ceremony_id, mac, mac_key_version)
            VALUES (2, \(Data(publicKey)), 'forged', \(Data(mac)), 1)
            """)
        let planted = EscrowKeyFingerprint(publicKey: publicKey)
        let refused = await #expect(throws: CustodyError.self) { _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer") }
        #expect(refused.map { if case .escrowKeyNotTrusted(version: 2, let fingerprint) = $0 { fingerprint == planted } else { false } } == true, "\(String(describing: refused))")
        #expect(refused.map { $0.description.contains(planted.description) } == true, "the message names the key to check")
        // Nothing half-made: no row, no escrow, no key pair on the token, and the tokens' pin
        // still names the custodians' key (a later deletion of the planted row is no alarm).
        #expect(try await harness.keyring.seedEscrows(tenant).isEmpty)
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty)
        let pairs = try await harness.pool.withPersistentSession { session in try session.findObjects([.class(.privateKey)]).count }
        #expect(pairs == 0, "no key pair left on the token")
        #expect(try await harness.keyring.escrowKeyAnchor.read()?.version == 1)

        // The planted row removed, the custodians make a real second escrow key: refused until
        // the configuration lists it, then sealed to.
        try await harness.ownerSQL(tenant: nil, "DELETE FROM escrow_keys WHERE version = 2")
        let directory = TestEnvironment.directory + "/\(harness.schema).escrow2"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let second = try await KeyCeremony(pool: harness.pool, participants: try Self.participants(), configHash: "test", logger: harness.logs.logger)
            .generateEscrow(
                threshold: 2, shares: 3, outputDirectory: directory, transcript: CeremonyTranscript(path: directory + "/transcript.jsonl"), keyring: harness.keyring
            )
        #expect(second.escrowKeyVersion == 2)
        let unconfigured = await #expect(throws: CustodyError.self) { _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer") }
        #expect(unconfigured.map { if case .escrowKeyNotTrusted(version: 2, second.fingerprint) = $0 { true } else { false } } == true, "\(String(describing: unconfigured))")
        let configured = WebhookSigner(
            pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: harness.trustedEscrowKeys.union([second.fingerprint])
        )
        _ = try await configured.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(try await harness.keyring.seedEscrows(tenant).map(\.escrowKeyVersion) == [2])
        await harness.shutdown()
    }

    @Test("a key planted under one tenant's v1a label on a replacement token (user PIN) does not stop `restore-webhook-keys` for the others: that token and version are refused by name")
    func restoreWithPlantedObject() async throws {
        let harness = try await CustodyHarness.make("atk3plant")
        let replicated = try await ReplicaTokenPool.make(harness, replicaName: "atk3plantb")
        let pool = replicated.pool
        let services = try await replicated.services(harness)
        let (keyring, webhooks) = (services.keyring, services.webhooks)
        _ = try await keyring.reconcile()
        var made = [(tenant: TenantID, publicKey: [UInt8], label: String)]()
        for name in ["planted", "clean"] {
            let tenant = try await keyring.createTenant(label: name, actor: "officer").id
            let (_, publicKey) = try await webhooks.createEd25519Key(tenant: tenant, actor: "officer")
            let label = try #require(try await keyring.versions(tenant).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
            made.append((tenant, try StandardWebhooks.decodePublicKey(publicKey), label))
        }
        let keys = made
        // B as a replacement before `restore-webhook-keys`: no v1a key; then the attacker's pair
        // under the first tenant's label (labels are in the database).
        try await pool.tokenPools[1].withPersistentSession { session in
            for key in keys {
                for handle in try session.findObjects([.label(key.label)]) { try session.destroyObject(handle) }
            }
        }
        try await Self.replaceKey(label: keys[0].label, on: pool.tokenPools[1])

        let report = try await KeyCeremony(pool: pool, participants: try Self.participants(), configHash: "test", logger: harness.logs.logger)
            .restoreWebhookKeys(
                sharePaths: Array(harness.escrowSharePaths.prefix(2)),
                transcript: CeremonyTranscript(path: TestEnvironment.directory + "/\(replicated.replica.label)-restore.jsonl"), keyring: keyring,
                actor: "ceremony:test"
            )
        #expect(report.imported == ["\(keys[1].tenant.rawValue)/webhook-ed25519/v1"], "\(report)")
        #expect(report.refused.count == 1 && report.refused.allSatisfy {
            $0.hasPrefix("\(keys[0].tenant.rawValue)/") && $0.contains(replicated.replica.label) && $0.contains("does not sign")
        }, "\(report.refused)")
        let message = Array("restored".utf8)
        let signature = try await pool.tokenPools[1].signEd25519(key: .tokenObject(label: keys[1].label, class: .privateKey), message: message)
        #expect(try Curve25519.Signing.PublicKey(rawRepresentation: keys[1].publicKey).isValidSignature(signature, for: message))
        await pool.shutdown()
        await harness.shutdown()
    }
}

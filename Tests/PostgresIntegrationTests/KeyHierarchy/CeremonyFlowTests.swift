import Ceremony
import Composition
import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Logging
import PKCS11
import SecureMemory
import Storage
import Testing
import Tokenization

/// The key ceremony end to end, on real SoftHSM tokens and a real PostgreSQL schema: the root
/// keys are generated and split, the token is lost, the keys come back from custodian shares,
/// and every tenant key and the audit chain still work; then the root KEK rotates.
/// Serialized: it initialises tokens (process-wide token state).
@Suite("Key ceremony: generate, lose the token, restore from shares, rotate", .serialized)
struct CeremonyFlowTests {
    let logs = LogCapture()

    /// A fresh token initialised by the ceremony's own init-token step, and a started pool on it.
    func freshToken(_ name: String, directory: String, transcript: CeremonyTranscript, participants: CeremonyParticipants) async throws -> (pool: SessionPool, token: TokenInfo, userPINFile: String) {
        let label = String("cer-\(name)-\(getpid())".prefix(32))
        let soPINFile = directory + "/\(name).so.pin", userPINFile = directory + "/\(name).user.pin"
        try writePrivateFile(soPINFile, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
        try writePrivateFile(userPINFile, SecretBytes(Array(UUID().uuidString.prefix(16).utf8)))
        let module = TestToken.sharedModule
        let token = try TestToken.serializingInitialisation {
            try KeyCeremony.provisionToken(module: module, label: label, securityOfficerPIN: .file(path: soPINFile), userPIN: .file(path: userPINFile))
        }
        try await KeyCeremony.recordInitToken(token, module: module, participants: participants, configHash: "test-config", transcript: transcript)
        // A second init-token for the same label is refused: ceremonies start from a fresh token.
        #expect(throws: CeremonyError.self) {
            try TestToken.serializingInitialisation {
                try KeyCeremony.provisionToken(module: module, label: label, securityOfficerPIN: .file(path: soPINFile), userPIN: .file(path: userPINFile))
            }
        }
        let pool = try SessionPool(
            configuration: HSMConfiguration(modulePath: TestToken.modulePath, token: .label(label), userPIN: .file(path: userPINFile)),
            logger: logs.logger
        )
        try await pool.start()
        return (pool, token, userPINFile)
    }

    @Test("init-token → generate-root 3-of-5 → tenant keys and audit → fresh token → restore → rotate-root")
    func wholeCeremony() async throws {
        let harness = try await CustodyHarness.make("ceremony", createRootKeys: false)
        let directory = TestEnvironment.directory + "/ceremony-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/shares", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory + "/rotation", withIntermediateDirectories: true)
        let participants = try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness", "Alan Auditor"])
        let transcript = CeremonyTranscript(path: directory + "/transcript.jsonl")
        let anchor = directory + "/audit-anchor.log"

        // 1. The first token, its root keys split 3-of-5.
        let (poolA, tokenA, _) = try await freshToken("a", directory: directory, transcript: transcript, participants: participants)
        let ceremonyA = KeyCeremony(pool: poolA, participants: participants, configHash: "test-config", logger: logs.logger)
        let generated = try await ceremonyA.generateRoot(threshold: 3, shares: 5, outputDirectory: directory + "/shares", transcript: transcript)
        #expect(generated.sharePaths.count == 5)
        let expectedLabels = RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 1) } + ["custos/root/mac/v1"]
        #expect(generated.keys.map(\.label) == expectedLabels, "one KEK per wrapped purpose and the MAC key, in one share set")
        let recorded = try KeyCeremony.expectedCheckValues(shareFile: generated.sharePaths[0])
        for key in generated.keys {
            #expect(recorded[key.label] == key.checkValue, "share file KCV = token CKA_CHECK_VALUE for \(key.label)")
            #expect(key.id.count == 32, "16-byte random CKA_ID")
        }
        // The imported keys carry the root templates' protections.
        let protections = try await poolA.withPersistentSession { session in
            try expectedLabels.map { label in
                let handle = try #require(try session.findObjects([.class(.secretKey), .label(label)]).first)
                return try [AttributeType.sensitive, .extractable, .modifiable, .copyable, .private, .token].map { try session.boolAttribute($0, of: handle) }
            }
        }
        #expect(protections.allSatisfy { $0 == [true, false, false, false, true, true] })
        await #expect(throws: CeremonyError.self) {
            _ = try await ceremonyA.generateRoot(threshold: 3, shares: 5, outputDirectory: directory + "/shares", transcript: transcript)
        }
        #expect(try await transcript.verify(pool: poolA).isIntact)

        // 2. Service life on the first token: a tenant, its keys, audit entries.
        let auditA = AuditLog(pool: poolA, database: harness.service, anchorPath: anchor)
        let keyringA = TenantKeyring(pool: poolA, database: harness.service, audit: auditA, logger: logs.logger)
        let tenant = try await keyringA.createTenant(label: "acme", actor: "officer")
        try await auditA.append(tenant: tenant.id, actor: "officer", action: .certificateRevoke, target: "token-a", details: [:])
        let message = Array("subject-42".utf8)
        let (pii, _) = try await keyringA.key(tenant.id, .pii)
        let macBefore = try await poolA.hmacSHA256(key: pii, data: message)
        let (dataKey, _) = try await keyringA.key(tenant.id, .data)
        let sealed = try await poolA.sealAESGCM(key: dataKey, plaintext: Array("ada@example.org".utf8))
        let face = try FeatureVector((0..<256).map { Float(sin(Double($0) * 0.41 + 0.3)) })
        let tokenBefore = try await BiometricTokenizer(pool: poolA, keyring: keyringA).tokenize(face, tenant: tenant.id)
        await poolA.shutdown()

        // 3. The token is lost: a fresh one, and restore attempts that must fail.
        let (poolB, tokenB, _) = try await freshToken("b", directory: directory, transcript: transcript, participants: participants)
        #expect(tokenB.serialNumber != tokenA.serialNumber)
        let ceremonyB = KeyCeremony(pool: poolB, participants: participants, configHash: "test-config", logger: logs.logger)
        let tooFew = await #expect(throws: CeremonyError.self) {
            _ = try await ceremonyB.restore(sharePaths: Array(generated.sharePaths.prefix(2)), transcript: transcript)
        }
        guard case .notEnoughShares(have: 2, need: 3) = tooFew else { Issue.record("got \(String(describing: tooFew))"); return }
        let corruptedPath = directory + "/corrupted-share.json"
        var text = try String(contentsOfFile: generated.sharePaths[3], encoding: .utf8)
        let shareStart = try #require(text.range(of: "\"share\" : \""))
        let digit = text.index(shareStart.upperBound, offsetBy: 10)
        text.replaceSubrange(digit...digit, with: text[digit] == "a" ? "b" : "a")
        try text.write(toFile: corruptedPath, atomically: false, encoding: .utf8)
        chmod(corruptedPath, 0o600)
        let corrupted = await #expect(throws: CeremonyError.self) {
            _ = try await ceremonyB.restore(sharePaths: [generated.sharePaths[0], generated.sharePaths[1], corruptedPath], transcript: transcript)
        }
        guard case .corruptedShare(_, index: 4) = corrupted else { Issue.record("got \(String(describing: corrupted))"); return }
        #expect(try await RootKeyInventory.read(from: poolB).entries.isEmpty, "failed restores leave no key behind")

        // 4. Restore from three custodians (2, 4, 5): same KCVs, keys back.
        let restored = try await ceremonyB.restore(
            sharePaths: [generated.sharePaths[1], generated.sharePaths[3], generated.sharePaths[4]], transcript: transcript
        )
        #expect(restored.keys.map(\.checkValue) == generated.keys.map(\.checkValue))
        await #expect(throws: CeremonyError.self) {
            _ = try await ceremonyB.restore(sharePaths: Array(generated.sharePaths.prefix(3)), transcript: transcript)
        }
        let auditB = AuditLog(pool: poolB, database: harness.service, anchorPath: anchor)
        let keyringB = TenantKeyring(pool: poolB, database: harness.service, audit: auditB, logger: logs.logger)
        let (piiB, _) = try await keyringB.key(tenant.id, .pii)
        #expect(try await poolB.hmacSHA256(key: piiB, data: message) == macBefore, "a tenant key made on the lost token unwraps under the restored KEK")
        let (dataKeyB, _) = try await keyringB.key(tenant.id, .data)
        #expect(try await poolB.openAESGCM(key: dataKeyB, box: sealed) == Array("ada@example.org".utf8))
        let tokenAfter = try await BiometricTokenizer(pool: poolB, keyring: keyringB).tokenize(face, tenant: tenant.id)
        #expect(tokenAfter == tokenBefore, "an enrolled token still matches: the same face gives the same token after the restore")
        let auditCheck = try await auditB.verify()
        #expect(auditCheck.isIntact && auditCheck.entriesChecked >= 2, "the audit chain MAC'd on the lost token verifies: \(auditCheck)")
        let comparisons = try await ceremonyB.verify(expected: try await ceremonyB.expectedCheckValues(transcript: transcript), transcript: transcript)
        #expect(comparisons.count == expectedLabels.count && comparisons.allSatisfy(\.matches))

        // 5. The transcript: intact, and any change to a line is found at that line.
        let verification = try await transcript.verify(pool: poolB)
        #expect(verification.isIntact, "\(verification)")
        let lines = try String(contentsOfFile: transcript.path, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.map { $0.contains("\"step\":\"") }.allSatisfy { $0 })
        #expect(lines.count == 5, "init-token, generate-root, init-token, restore, verify; got \(lines.count)")
        var edited = lines
        edited[1] = edited[1].replacingOccurrences(of: "Grace Witness", with: "Mallory Witness")
        let editedPath = directory + "/transcript-edited.jsonl"
        try (edited.joined(separator: "\n") + "\n").write(toFile: editedPath, atomically: false, encoding: .utf8)
        #expect(try await CeremonyTranscript(path: editedPath).verify(pool: poolB).firstBadLine == 2)
        var dropped = lines
        dropped.remove(at: 2)
        let droppedPath = directory + "/transcript-dropped.jsonl"
        try (dropped.joined(separator: "\n") + "\n").write(toFile: droppedPath, atomically: false, encoding: .utf8)
        #expect(try await CeremonyTranscript(path: droppedPath).verify(pool: poolB).firstBadLine == 3)
        // A recorded KCV that differs from the token's is reported as a mismatch.
        let foreign = try await ceremonyB.verify(expected: [expectedLabels[0]: "000000"], transcript: nil)
        #expect(foreign.first { $0.label == expectedLabels[0] }?.matches == false)

        // 6. Rotate the root KEKs: without the custodians' shares of the current KEKs it is
        // refused before anything is written; with three of them, new shares, every tenant key
        // re-wrapped, still the same keys.
        let withoutShares = await #expect(throws: CeremonyError.self) {
            _ = try await ceremonyB.rotateRoot(threshold: 2, shares: 3, outputDirectory: directory + "/rotation", transcript: transcript, keyring: keyringB, recordingIn: harness.owner)
        }
        guard case .custody(.rewrapKeyMissing) = withoutShares else { Issue.record("got \(String(describing: withoutShares))"); return }
        #expect(try await RootKeyInventory.read(from: poolB).newestKEKVersion == 1, "no new KEK without the old shares")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/rotation").isEmpty, "no share file written")
        let rotation = try await ceremonyB.rotateRoot(
            threshold: 2, shares: 3, outputDirectory: directory + "/rotation", transcript: transcript, keyring: keyringB, recordingIn: harness.owner,
            currentShares: [[generated.sharePaths[0], generated.sharePaths[2], generated.sharePaths[4]]]
        )
        #expect(rotation.newKEKVersion == 2)
        let rewrapKEKsLeft = try await poolB.withPersistentSession { try $0.findObjects([.class(.secretKey), .token(false), .unwrap(true)]).count }
        #expect(rewrapKEKsLeft == 0, "the rewrap KEKs rebuilt from shares were destroyed when the rotation ended")
        let wrappedCount = try await keyringB.versions(tenant.id).filter { $0.wrappedKey != nil }.count
        #expect(rotation.rewrap.rewrapped == wrappedCount && wrappedCount > 0)
        let rows = try await keyringB.versions(tenant.id)
        #expect(rows.filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 2 })
        let again = try await ceremonyB.resumeRewrap(transcript: transcript, keyring: keyringB, recordingIn: harness.owner, currentShares: [Array(generated.sharePaths.prefix(3))])
        #expect(again.report.rewrapped == 0 && again.report.alreadyCurrent == wrappedCount)
        await poolB.shutdown()

        // A fresh runtime (no cached handles) on the rotated token, as the service would start
        // after the ceremony: it picks the newest KEKs (v2), unwraps under them, and new tenants
        // get v2 blobs.
        let rootKeysC = try await CustosRuntime.run(
            pool: poolB.configuration, database: harness.settings.configuration(role: .service, schema: harness.schema),
            custody: CustodyGraph.Settings(auditAnchorPath: anchor), options: CustosRuntime.Options(logger: logs.logger, verifyRootKeys: false)
        ) { runtime in
            let (poolC, keyringC, auditC) = (runtime.pool, runtime.keyring, runtime.audit)
            #expect(runtime.custody.rootKeys.kekVersion == 2 && runtime.custody.rootKeys.macVersion == 1)
            let (piiC, _) = try await keyringC.key(tenant.id, .pii)
            #expect(try await poolC.hmacSHA256(key: piiC, data: message) == macBefore)
            let (dataKeyC, _) = try await keyringC.key(tenant.id, .data)
            #expect(try await poolC.openAESGCM(key: dataKeyC, box: sealed) == Array("ada@example.org".utf8))
            let other = try await keyringC.createTenant(label: "globex", actor: "officer")
            #expect(try await keyringC.versions(other.id).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 2 })
            #expect(try await auditC.verify().isIntact)
            let labelsC = Set(try await RootKeyInventory.read(from: poolC).entries.map(\.label))
            let expectedC = Set(expectedLabels + RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 2) })
            #expect(labelsC == expectedC, "old KEKs kept beside the new ones")
            let final = try await transcript.verify(pool: poolC)
            #expect(final.isIntact, "\(final)")
            return runtime.custody.rootKeys
        }

        // 7. A third token rebuilt from both share sets works with the rotated rows.
        let (poolD, _, _) = try await freshToken("d", directory: directory, transcript: transcript, participants: participants)
        let ceremonyD = KeyCeremony(pool: poolD, participants: participants, configHash: "test-config", logger: logs.logger)
        _ = try await ceremonyD.restore(sharePaths: [generated.sharePaths[0], generated.sharePaths[2], generated.sharePaths[4]], transcript: transcript)
        _ = try await ceremonyD.restore(sharePaths: Array(rotation.generated.sharePaths.suffix(2)), transcript: transcript)
        let keyringD = TenantKeyring(
            pool: poolD, database: harness.service, rootKeys: rootKeysC,
            audit: AuditLog(pool: poolD, database: harness.service, rootKeys: rootKeysC, anchorPath: anchor), logger: logs.logger
        )
        let (piiD, _) = try await keyringD.key(tenant.id, .pii)
        #expect(try await poolD.hmacSHA256(key: piiD, data: message) == macBefore)
        #expect(try await transcript.verify(pool: poolD).isIntact)
        await poolD.shutdown()

        // Nothing secret reached a log: no share hex, no PIN.
        for path in generated.sharePaths {
            let raw = try String(contentsOfFile: path, encoding: .utf8)
            let range = try #require(raw.range(of: "\"share\" : \""))
            let hex = String(raw[range.upperBound...].prefix(64))
            #expect(!logs.text.contains(hex))
            #expect(!(try String(contentsOfFile: transcript.path, encoding: .utf8)).contains(hex))
        }
        await harness.shutdown()
    }
}

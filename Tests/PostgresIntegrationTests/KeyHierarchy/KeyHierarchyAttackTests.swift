import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import PostgresNIO
import Storage
import Testing

/// Issue 9 review, second round: the attacker holds the user PIN (and read, sometimes write,
/// access to PostgreSQL) and goes after the new key hierarchy itself rather than the blobs:
/// root keys of their own making planted on the token (the user PIN can create token objects
/// that look exactly like the ceremony's), labels that parse oddly, and an interrupted
/// root-KEK rotation resumed onto their keys.
@Suite("Key hierarchy: planted root keys, odd labels, hijacked resume", .serialized)
struct KeyHierarchyAttackTests {
    /// Plants a complete set of per-purpose root KEKs of `version` with values the attacker
    /// chose, each with the very template the ceremony uses (unwrap template included).
    /// - Returns: the values, by purpose.
    static func plantKEKSet(_ pool: SessionPool, version: Int) async throws -> [KeyPurpose: [UInt8]] {
        try await pool.withPersistentSession { session in
            var values = [KeyPurpose: [UInt8]]()
            for purpose in RootKeys.wrappedPurposes {
                let value = try session.generateRandom(count: 32)
                _ = try session.createObject(KeyTemplate.rootKEK(
                    label: RootKeys.kekLabel(purpose, version: version), id: [0xEE], value: SecretBytes(value), usage: try #require(purpose.usage)
                ))
                values[purpose] = value
            }
            return values
        }
    }

    /// What the attacker does offline with a blob wrapped under a KEK whose value they know: a
    /// permissive session KEK of that value unwraps it readable, and the PII key computes.
    static func readPIIKey(_ pool: SessionPool, blob: [UInt8], kekValue: [UInt8], message: [UInt8]) async throws -> (value: [UInt8], mac: [UInt8]) {
        try await pool.withPersistentSession { session in
            let kek = try session.createObject([
                .class(.secretKey), .keyType(.aes), .token(false), .unwrap(true), .value(SecretBytes(kekValue)),
            ])
            defer { try? session.destroyObject(kek) }
            let key = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: blob, template: [
                .class(.secretKey), .keyType(.genericSecret), .token(false), .sensitive(false), .extractable(true), .sign(true),
            ])
            defer { try? session.destroyObject(key) }
            return (try session.attribute(.value, of: key), try session.sign(.sha256HMAC, key: key, data: message))
        }
    }

    @Test("a KEK set planted with the user PIN is never used; were it used, every new tenant key would be readable")
    func plantedKEKSetIsRefused() async throws {
        let harness = try await CustodyHarness.make("plantset")
        // The first start records the ceremony's keys.
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        let planted = try await Self.plantKEKSet(harness.pool, version: 2)

        // Why it matters: the service wraps new tenant keys under the newest KEK version on the
        // token. With the planted set it would be v2, whose values the attacker knows.
        let chosen = RootKeys(inventory: try await RootKeyInventory.read(from: harness.pool))
        #expect(chosen.kekVersion == 2, "the token alone decides the newest KEK version")
        let keyring = TenantKeyring(pool: harness.pool, database: harness.service, rootKeys: chosen, audit: harness.audit, logger: harness.logs.logger)
        let tenant = try await keyring.createTenant(label: "victim", actor: "officer")
        let piiRow = try #require(try await keyring.versions(tenant.id).first { $0.purpose == .pii })
        let message = Array("subject-42".utf8)
        let stolen = try await Self.readPIIKey(harness.pool, blob: try #require(piiRow.wrappedKey), kekValue: try #require(planted[.pii]), message: message)
        let (pii, _) = try await keyring.key(tenant.id, .pii)
        let served = try await harness.pool.hmacSHA256(key: pii, data: message)
        #expect(stolen.value.count == 32 && stolen.mac == served, "the clear tenant key")

        // The defence: root keys the database did not record are left out, so new tenant keys
        // are wrapped under the recorded set.
        let trusted = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        #expect(RootKeys(inventory: trusted).kekVersion == 1)
        #expect(trusted.entries.allSatisfy { !$0.label.hasSuffix("/v2") })
        let safe = TenantKeyring(pool: harness.pool, database: harness.service, rootKeys: RootKeys(inventory: trusted), audit: harness.audit, logger: harness.logs.logger)
        let other = try await safe.createTenant(label: "safe", actor: "officer")
        let otherPII = try #require(try await safe.versions(other.id).first { $0.purpose == .pii })
        #expect(otherPII.rootKEKVersion == 1)
        let opened = try? await Self.readPIIKey(harness.pool, blob: try #require(otherPII.wrappedKey), kekValue: try #require(planted[.pii]), message: message)
        #expect(opened == nil, "the planted KEK opens nothing wrapped after the check")
        #expect(try await RootKeyStore.allRecorded(harness.service).keys.allSatisfy { !$0.hasSuffix("/v2") }, "nothing planted was recorded")
        await harness.shutdown()
    }

    @Test("a MAC key planted with the user PIN is never used")
    func plantedMACKeyIsRefused() async throws {
        let harness = try await CustodyHarness.make("plantmac")
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        try await harness.pool.withPersistentSession { session in
            _ = try session.createObject(KeyTemplate.rootMAC(label: RootKeys.macLabel(version: 2), id: [0xEE], value: SecretBytes(try session.generateRandom(count: 32))))
        }
        // Unrefused, the service would MAC rows and the audit chain with a key the attacker knows.
        #expect(RootKeys(inventory: try await RootKeyInventory.read(from: harness.pool)).macVersion == 2)
        let trusted = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        #expect(RootKeys(inventory: trusted).macVersion == 1, "rows and the audit chain stay MAC'd by the recorded key")
        await harness.shutdown()
    }

    /// A recorded install with one tenant, the PII key's MAC of `message` before any rotation,
    /// and a ceremony writing into a fresh rotation folder.
    static func rotationScene(_ name: String) async throws -> (
        harness: CustodyHarness, tenant: TenantRecord, message: [UInt8], macBefore: [UInt8],
        directory: String, ceremony: KeyCeremony, transcript: CeremonyTranscript
    ) {
        let harness = try await CustodyHarness.make(name)
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        let tenant = try await harness.keyring.createTenant(label: "victim", actor: "officer")
        let message = Array("subject-\(name)".utf8)
        let (piiBefore, _) = try await harness.keyring.key(tenant.id, .pii)
        let macBefore = try await harness.pool.hmacSHA256(key: piiBefore, data: message)
        let directory = TestEnvironment.directory + "/\(harness.schema).rotation"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ceremony = KeyCeremony(
            pool: harness.pool, participants: try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"]),
            configHash: "test", logger: harness.logs.logger
        )
        return (harness, tenant, message, macBefore, directory, ceremony, CeremonyTranscript(path: directory + "/transcript.jsonl"))
    }

    @Test("an interrupted rotation never resumes under a newer KEK set planted meanwhile; without it, under the set it made")
    func resumeIgnoresPlantedSet() async throws {
        let (harness, tenant, message, macBefore, directory, ceremony, transcript) = try await Self.rotationScene("resumehijack")
        let shares = [Array(harness.sharePaths.prefix(2))]
        // The rotation stops after importing KEKs v2, before moving any row (here: every row's
        // MAC is unreadable for a moment, so the first row stops it; it is put back after).
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET row_mac = row_mac || '\\x00'::bytea")
        await #expect(throws: (any Error).self) {
            _ = try await ceremony.rotateRoot(threshold: 2, shares: 3, outputDirectory: directory, transcript: transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares)
        }
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET row_mac = substring(row_mac from 1 for length(row_mac) - 1)")
        #expect(try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 1 })

        // Meanwhile the attacker plants a complete set v3, then the custodians resume.
        let planted = try await Self.plantKEKSet(harness.pool, version: 3)
        let v3 = RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 3) }
        // The resume finishes under the set the rotation recorded, never the planted one.
        let resumed = try await ceremony.resumeRewrap(transcript: transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares)
        let moved = try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }
        if let piiRow = moved.first(where: { $0.purpose == .pii }), piiRow.rootKEKVersion == 3,
           let stolen = try? await Self.readPIIKey(harness.pool, blob: piiRow.wrappedKey ?? [], kekValue: planted[.pii] ?? [], message: message) {
            Issue.record("resume moved every key under the planted KEKs: the PII key came out (\(stolen.value.count) bytes)")
        }
        #expect(!v3.isEmpty)
        let rows = try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }
        #expect(resumed.kekVersion == 2, "resume targets the set the rotation made and recorded")
        #expect(rows.allSatisfy { $0.rootKEKVersion == 2 })
        let fresh = TenantKeyring(pool: harness.pool, database: harness.service, rootKeys: RootKeys(kekVersion: 2), audit: harness.audit, logger: harness.logs.logger)
        let (piiAfter, _) = try await fresh.key(tenant.id, .pii)
        #expect(try await harness.pool.hmacSHA256(key: piiAfter, data: message) == macBefore, "the same key, nothing lost")
        await harness.shutdown()
    }

    @Test("a rotation interrupted between importing its KEKs and recording them: the service keeps the old set; resume with the new set's shares adopts it and loses nothing")
    func rotationInterruptedBeforeRecord() async throws {
        let (harness, tenant, message, macBefore, directory, ceremony, transcript) = try await Self.rotationScene("unrecorded")
        let shares = [Array(harness.sharePaths.suffix(2))]
        // The crash: KEKs v2 imported, no row moved, their record gone (as if never written).
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET row_mac = row_mac || '\\x00'::bytea")
        await #expect(throws: (any Error).self) {
            _ = try await ceremony.rotateRoot(threshold: 2, shares: 3, outputDirectory: directory, transcript: transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares)
        }
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET row_mac = substring(row_mac from 1 for length(row_mac) - 1)")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM root_keys WHERE label LIKE '%/v2'")
        let v2 = Set(RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 2) })

        // The service starts, on the recorded set: the unrecorded one is never used.
        let before = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        #expect(RootKeys(inventory: before).kekVersion == 1)
        #expect(Set(before.entries.map(\.label)).isDisjoint(with: v2))
        // Resume with only the old shares: nothing to vouch for v2, so nothing moves.
        let idle = try await ceremony.resumeRewrap(transcript: transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares)
        #expect(idle.kekVersion == 1 && idle.report.rewrapped == 0)
        #expect(try await harness.keyring.versions(tenant.id).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 1 }, "no row names them")
        // With the new set's own shares (written before the import), the custodians vouch for it.
        let newShares = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix("custos-share-") }.sorted().map { directory + "/" + $0 }
        #expect(newShares.count == 3)
        let adopted = try await ceremony.resumeRewrap(transcript: transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares + [Array(newShares.prefix(2))])
        #expect(adopted.kekVersion == 2)
        let inventory = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        let fresh = TenantKeyring(pool: harness.pool, database: harness.service, rootKeys: RootKeys(inventory: inventory), audit: harness.audit, logger: harness.logs.logger)
        let (piiAfter, _) = try await fresh.key(tenant.id, .pii)
        #expect(try await harness.pool.hmacSHA256(key: piiAfter, data: message) == macBefore, "the same key, nothing lost")
        #expect(try await fresh.versions(tenant.id).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 2 })
        await harness.shutdown()
    }

    @Test("labels that only look like root keys are not root keys: a non-canonical legacy label cannot block the service for good")
    func oddLabels() async throws {
        for label in [
            "custos/root/kek/v01", "custos/root/kek/v+1", "custos/root/kek/data/v02", "custos/root/kek/data/v+2",
            "custos/root/mac/v001", "custos/root/kek/v0", "custos/root/kek/v-1", "custos/root/kek/data/v 2", "custos/root/kek/data/v٢",
        ] {
            #expect(RootKeyInventory.parse(label) == nil, "\(label) parsed as a root key")
        }
        #expect(RootKeyInventory.parse("custos/root/kek/data/v12")?.version == 12)
        #expect(RootKeyInventory.parse("custos/root/kek/v3")?.kind == .legacyKEK)

        // On the token: a permissive KEK labelled `custos/root/kek/v01` read as legacy v1 made
        // the service refuse to start, and rotate-root destroys only `custos/root/kek/v1`: no
        // command could ever clear it.
        let harness = try await CustodyHarness.make("oddlabel")
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        try await harness.pool.withPersistentSession { session in
            _ = try session.generateKey(.aesKeyGen, template: [
                .class(.secretKey), .keyType(.aes), .valueLength(32), .token(true), .private(true), .sensitive(true),
                .extractable(false), .wrap(true), .unwrap(true), .label("custos/root/kek/v01"),
            ])
        }
        let inventory = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        #expect(inventory.legacyKEKVersions.isEmpty && inventory.newestKEKVersion == 1)
        await harness.shutdown()
    }

    @Test("the root KEKs cannot be altered, copied or used to derive with the user PIN")
    func rootKEKsAreFixed() async throws {
        let harness = try await CustodyHarness.make("kekfixed")
        try await harness.pool.withPersistentSession { session in
            for purpose in RootKeys.wrappedPurposes {
                let kek = try #require(try session.findObjects([.class(.secretKey), .label(RootKeys.kekLabel(purpose, version: 1))]).first)
                #expect(throws: PKCS11Error.self, "dropping the unwrap template of \(purpose.rawValue)") {
                    try session.setAttributes([.unwrapTemplate([.class(.secretKey)])], of: kek)
                }
                #expect(throws: PKCS11Error.self, "encrypting with \(purpose.rawValue)'s KEK") { try session.setAttributes([.encrypt(true)], of: kek) }
                #expect(throws: PKCS11Error.self, "copying \(purpose.rawValue)'s KEK without its template") {
                    _ = try session.copyObject(kek, template: [.token(false)])
                }
                #expect(throws: PKCS11Error.self, "reading \(purpose.rawValue)'s KEK") { _ = try session.attribute(.value, of: kek) }
                #expect(try !session.boolAttribute(.encrypt, of: kek) && !session.boolAttribute(.decrypt, of: kek) && !session.boolAttribute(.derive, of: kek))
            }
        }
        await harness.shutdown()
    }
}

extension KeyHierarchyAttackTests {
    @Test("no unwrap under a pinned KEK shortens an HMAC key (byte-by-byte guessing) or decrypts chosen blocks (AES-ECB)")
    func noShortKeysNoBlockOracle() async throws {
        let harness = try await CustodyHarness.make("shortkey")
        let tenant = try await harness.keyring.createTenant(label: "victim", actor: "officer")
        let row = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .pii })
        let blob = try #require(row.wrappedKey)
        let message = Array("subject-9".utf8)
        let (pii, _) = try await harness.keyring.key(tenant.id, .pii)
        let genuine = try await harness.pool.hmacSHA256(key: pii, data: message)
        let pinned = KeyTemplate.tenantKeyUnwrapped(.hmac)
        let (wrong, blockOracles) = try await harness.pool.withPersistentSession { session -> ([String], [String]) in
            let kek = try #require(try session.findObjects([.class(.secretKey), .label(RootKeys.kekLabel(.pii, version: 1))]).first)
            var wrong = [String]()
            // A 1-byte key would let the PIN holder guess the first byte of the real key by its
            // HMACs, then the next: the whole key in 32 × 256 tries.
            for length in [1, 2, 16] {
                for mechanism in [Mechanism.aesKeyWrapPad, .aesKeyWrap] {
                    guard let key = try? session.unwrapKey(mechanism, unwrappingKey: kek, wrapped: blob, template: pinned + [.valueLength(length)]) else { continue }
                    defer { try? session.destroyObject(key) }
                    if try session.sign(.sha256HMAC, key: key, data: message) != genuine { wrong.append("\(mechanism.type) with CKA_VALUE_LEN \(length)") }
                }
            }
            // AES-ECB "unwrapping" of chosen blocks would be a decryption oracle under the KEK.
            var blockOracles = [String]()
            for (name, template) in [("pinned", pinned), ("pinned, 1 byte", pinned + [.valueLength(1)])] {
                for input in [Array(blob.prefix(16)), Array(blob.prefix(32))] {
                    if let key = try? session.unwrapKey(.aesECB, unwrappingKey: kek, wrapped: input, template: template) {
                        blockOracles.append("\(name), \(input.count) bytes")
                        try? session.destroyObject(key)
                    }
                }
            }
            return (wrong, blockOracles)
        }
        #expect(wrong.isEmpty, "unwraps that gave another key than the stored one: \(wrong)")
        #expect(blockOracles.isEmpty, "AES-ECB unwraps that worked: \(blockOracles)")
        await harness.shutdown()
    }
}

extension RootKeyStore {
    /// Label → check value recorded in `database` (a test's read of `root_keys`).
    static func allRecorded(_ database: Database) async throws -> [String: [UInt8]] {
        try await database.withTransaction(context: "read root keys") { connection in try await all(on: connection) }
    }
}

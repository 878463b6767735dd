@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PostgresNIO
import SecureMemory
@testable import Storage
import Testing

/// `custos ceremony rotate-root` run while the service serves, as docs/operations.md allows: the
/// ceremony records the new root KEK set, then re-wraps the rows it finds. A keyring that
/// started before must wrap what it makes afterwards under the new set too (attack review,
/// session 19: it kept wrapping new tenants' and rotations' keys under the superseded KEKs, whose
/// shares may be why the rotation happened, and the ceremony reported success).
@Suite("Root-KEK rotation while a keyring serves", .serialized)
struct RootKEKRotationWhileServingTests {
    @Test("a keyring started before rotate-root wraps every key it makes afterwards under the new set, and the keys work")
    func servingKeyringAdoptsNewSet() async throws {
        let harness = try await CustodyHarness.make("rootlive")
        let serving = harness.keyring
        let acme = try await serving.createTenant(label: "acme", actor: "officer").id
        // The service has started once: the database records the root keys.
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service, logger: harness.logs.logger)
        #expect(serving.rootKeys.kekVersion == 1)

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory)
        let output = directory + "/rotation"
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let rotation = try await RootKEKRotationKillTests.rotateRoot(
            harness, config: config, ["--threshold", "2", "--shares", "3", "--output", output], shares: Array(harness.sharePaths.prefix(2))
        )
        #expect(rotation.process.terminationReason == .exit && rotation.process.terminationStatus == 0, "rotate-root succeeds: \(rotation.output)")

        // Made by the keyring that never restarted: a tenant, a rotation, a webhook secret.
        let globex = try await serving.createTenant(label: "globex", actor: "officer").id
        let rotated = try await serving.rotate(acme, .data, actor: "officer")
        let made = try await serving.versions(globex).filter { $0.wrappedKey != nil } + [rotated]
        #expect(made.count > 1)
        for record in made {
            #expect(record.rootKEKVersion == 2, "\(record.tenant) \(record.purpose.rawValue)/v\(record.version) is wrapped under root KEK v\(record.rootKEKVersion)")
        }
        #expect(serving.rootKeys.kekVersion == 2)
        // Every version still names the newest set (the ceremony moved the old rows), and the
        // new keys unwrap and compute.
        for tenant in [acme, globex] {
            #expect(try await serving.versions(tenant).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 2 })
        }
        let (pii, _) = try await serving.key(globex, .pii)
        #expect(try await harness.pool.hmacSHA256(key: pii, data: Array("subject".utf8)).count == 32)
        let (data, version) = try await serving.key(acme, .data)
        #expect(version == rotated.version)
        let box = try await harness.pool.sealAESGCM(key: data, plaintext: Array("ada@example.org".utf8))
        #expect(try await harness.pool.openAESGCM(key: data, box: box) == Array("ada@example.org".utf8))
        await harness.shutdown()
    }

    @Test("a root KEK set on the token that the database never recorded is not adopted, whatever its version")
    func unrecordedSetIgnored() async throws {
        let harness = try await CustodyHarness.make("rootplant")
        let serving = harness.keyring
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service, logger: harness.logs.logger)
        // The user PIN plants a complete v2 set: objects that look like root KEKs, values chosen.
        try await harness.pool.withPersistentSession { session in
            for purpose in RootKeys.wrappedPurposes {
                let usage = try #require(purpose.usage)
                _ = try session.createObject(
                    KeyTemplate.rootKEK(label: RootKeys.kekLabel(purpose, version: 2), id: [2], value: SecretBytes([UInt8](repeating: 7, count: 32)), usage: usage)
                )
            }
        }
        try await serving.adoptRecordedRootKEKs()
        #expect(serving.rootKeys.kekVersion == 1, "a planted set is never used to wrap")
        let tenant = try await serving.createTenant(label: "acme", actor: "officer").id
        #expect(try await serving.versions(tenant).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 1 })
        await harness.shutdown()
    }

    @Test("the service role cannot record root keys once any are recorded (migration 31); a newer set the owner recorded that the token lacks makes key creation fail closed")
    func recordsAreTheOwners() async throws {
        let harness = try await CustodyHarness.make("rootforged")
        let serving = harness.keyring
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service, logger: harness.logs.logger)
        // The service role's password (and the user PIN, for a planted set) no longer make a set
        // recorded: neither a row of its own nor a second "first" record.
        let labels = RootKeys.wrappedPurposes.map { RootKeys.kekLabel($0, version: 9) }
        await #expect(throws: (any Error).self) {
            try await harness.service.withTransaction(context: "database writer") { connection in
                for label in labels { try await RootKeyStore.record(label: label, checkValue: [1, 2, 3], on: connection) }
            }
        }
        let again = try await harness.service.withTransaction(context: "database writer") { connection in
            try await RootKeyStore.recordFirst(labels.map { (label: $0, checkValue: [1, 2, 3]) }, on: connection)
        }
        #expect(!again, "the first-start record is refused once anything is recorded")
        #expect(try await RootKeyCheck.recorded(in: harness.service).keys.allSatisfy { !$0.hasSuffix("/v9") })
        _ = try await serving.createTenant(label: "acme", actor: "officer")

        // The owner role (the ceremony) recorded a set this token lacks: no key is made under the
        // older set, and the refusal names the keys; once the record is put right, creation works.
        try await harness.owner.withTransaction(context: "owner") { connection in
            for label in labels { try await RootKeyStore.record(label: label, checkValue: [1, 2, 3], on: connection) }
        }
        let refused = await #expect(throws: CustodyError.self) { _ = try await serving.createTenant(label: "globex", actor: "officer") }
        guard case .rootKeysDoNotMatch = refused else { Issue.record("got \(String(describing: refused))"); return }
        #expect(try await TenantStore(harness.service).list().count == 1, "no tenant made under the set the record says is superseded")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM root_keys WHERE label LIKE '%/v9'")
        let tenant = try await serving.createTenant(label: "globex", actor: "officer").id
        #expect(try await serving.versions(tenant).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 1 })
        await harness.shutdown()
    }

    @Test("the service role's first record refuses malformed input, and a ceremony's record that finds other values already recorded fails rather than succeed silently (helper-69)")
    func firstRecordAndCeremonyRecord() async throws {
        let harness = try await CustodyHarness.make("rootfirst")
        let inventory = try await RootKeyInventory.read(from: harness.pool)
        func first(_ query: PostgresQuery) async throws -> Bool {
            try await harness.service.withTransaction(context: "database writer") { connection in
                var result = false
                for try await recorded in try await connection.query(query, logger: Database.quiet).decode(Bool.self) { result = recorded }
                return result
            }
        }
        // Nothing recorded yet (the harness's runtime skips the check): inputs that record nothing.
        #expect(try await !first("SELECT record_first_root_keys(NULL, NULL)"))
        #expect(try await !first("SELECT record_first_root_keys(ARRAY['custos/root/mac/v1'], ARRAY[''])"))
        #expect(try await !first("SELECT record_first_root_keys(ARRAY['custos/root/whatever'], ARRAY['00aa11'])"))
        #expect(try await !first("SELECT record_first_root_keys(ARRAY['custos/root/mac/v1', NULL], ARRAY['00aa11', '00aa11'])"))
        #expect(try await RootKeyCheck.recorded(in: harness.service).isEmpty)
        // The service role makes the first record with values of its own choosing ...
        let labels = inventory.entries.map(\.label)
        #expect(try await first("SELECT record_first_root_keys(\(labels), \(labels.map { _ in "000000" }))"))
        // ... then the ceremony's record (as the owner) finds them: an error naming the labels.
        let refused = await #expect(throws: CustodyError.self) { try await RootKeyCheck.record(inventory, in: harness.owner) }
        guard case .rootKeysDoNotMatch(let mismatches) = refused else { Issue.record("got \(String(describing: refused))"); return }
        #expect(Set(mismatches.map(\.label)) == Set(labels))
        await harness.shutdown()
    }
}


import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

/// A row the service role's database password alone can add to `audit_log` (INSERT is granted:
/// appends are the service's) becomes the log's head. helper-71 (session 20): one entry numbered
/// `Int64.max` trapped every append (`headSeq + 1`), so the next audited call — or the periodic
/// `key.use` flush — killed the process, on every instance and after every restart; an entry
/// numbered next with a copied MAC was chained onto without a word.
@Suite("Audit log head planted by the database's writer", .serialized)
struct AuditHeadAttackTests {
    private func plant(_ harness: CustodyHarness, seq: Int64, mac: [UInt8], macKeyVersion: Int = 1) async throws {
        let zero = Data(repeating: 0, count: 32)
        _ = try await harness.service.withTransaction(context: "database writer") { connection in
            try await connection.query("""
                INSERT INTO audit_log (seq, at, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version)
                VALUES (\(seq), now(), 'x', 'x', 'x', '{}', \(zero), \(zero), \(Data(mac)), \(macKeyVersion))
                """, logger: Database.quiet)
        }
    }

    /// One genuine entry: its number and MAC (which a writer can copy).
    private func genuineEntry(_ harness: CustodyHarness) async throws -> (seq: Int64, mac: [UInt8]) {
        let seq = try await append(harness, "genuine")
        let mac = try await harness.service.withTransaction(context: "read") { connection in
            try await AuditLogStore.entries(after: seq - 1, limit: 1, on: connection).first?.mac
        }
        return (seq, try #require(mac))
    }

    private func append(_ harness: CustodyHarness, _ target: String) async throws -> Int64 {
        try await harness.audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: target, details: [:])
    }

    @Test("an entry numbered Int64.max refuses appends and the anchor reset with DATA_LOSS, never a trap; the anchor stays; once the owner removes it, appends go on")
    func plantedMaximalHead() async throws {
        let harness = try await CustodyHarness.make("auditmaxhead")
        let (first, mac) = try await genuineEntry(harness)
        try await plant(harness, seq: .max, mac: mac)

        let refused = await #expect(throws: CustodyError.self) { _ = try await append(harness, "after") }
        guard case .auditLogHeadInvalid(seq: .max) = refused else { Issue.record("got \(String(describing: refused))"); return }
        // The officer's reset is refused before it sets the anchors aside.
        let reset = await #expect(throws: CustodyError.self) { _ = try await harness.audit.resetAnchor(actor: "officer") }
        guard case .auditLogHeadInvalid = reset else { Issue.record("got \(String(describing: reset))"); return }
        #expect(FileManager.default.fileExists(atPath: harness.anchorPath), "the anchor file was not set aside")
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == first + 1, "\(verification)")

        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq = \(Int64.max)")
        let restored = try await harness.audit.verify()
        #expect(restored.isIntact && restored.hsmAnchoredSeq == first, "the HSM anchor was kept: \(restored)")
        #expect(try await append(harness, "after") == first + 1)
        #expect(try await harness.audit.verify().isIntact)
        await harness.shutdown()
    }

    @Test("an entry numbered next with another entry's MAC is refused as the head, not chained onto")
    func plantedNextHead() async throws {
        let harness = try await CustodyHarness.make("auditnexthead")
        let (first, mac) = try await genuineEntry(harness)
        try await plant(harness, seq: first + 1, mac: mac)
        let refused = await #expect(throws: CustodyError.self) { _ = try await append(harness, "after") }
        guard case .auditLogHeadInvalid(seq: first + 1) = refused else { Issue.record("got \(String(describing: refused))"); return }
        await harness.shutdown()
    }

    @Test("a planted head naming a MAC key version the token lacks is a finding (DATA_LOSS, and `audit verify` reports it), not an HSM outage (helper-75)")
    func plantedHeadUnknownMACKey() async throws {
        let harness = try await CustodyHarness.make("auditmackey")
        let first = try await append(harness, "genuine")
        try await plant(harness, seq: first + 1, mac: [UInt8](repeating: 1, count: 32), macKeyVersion: 999)
        let refused = await #expect(throws: CustodyError.self) { _ = try await append(harness, "after") }
        guard case .auditLogHeadInvalid(seq: first + 1) = refused else { Issue.record("got \(String(describing: refused))"); return }
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == first + 1, "\(verification)")
        await harness.shutdown()
    }
}

import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import PostgresNIO
@testable import Storage
import Testing

/// The audit head anchored outside PostgreSQL: in the HSM (one data object every instance
/// shares, never moved backwards) and in each instance's anchor file.
@Suite("Audit anchor")
struct AuditAnchorTests {
    private func count(_ harness: CustodyHarness) async throws -> Int64 {
        try await harness.owner.withTransaction(context: "count audit") { connection in
            try await connection.query("SELECT count(*) FROM audit_log", logger: Database.quiet).collect().first!.decode(Int64.self)
        }
    }

    private func append(_ log: AuditLog, _ index: Int) async throws {
        _ = try await log.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: "item-\(index)", details: [:])
    }

    /// The anchor object's raw value, read as someone holding the user PIN would.
    private func hsmAnchorValue(_ harness: CustodyHarness) async throws -> [UInt8] {
        try await harness.pool.withPersistentSession { session in
            let handle = try #require(try session.findObjects([.class(.data), .label(AuditHSMAnchor.label)]).first)
            return try session.attribute(.value, of: handle)
        }
    }

    @Test("Two instances append interleaved, each with its own anchor file: both verify; deleting the newest entries is found by both and blocks appends")
    func twoInstances() async throws {
        let harness = try await CustodyHarness.make("anchortwo")
        let secondDatabase = try harness.secondServiceDatabase()
        let second = AuditLog(pool: harness.pool, database: secondDatabase, anchorPath: harness.anchorPath + ".second")
        // Each instance appends 10 in a row, both at once: their appends interleave on the one
        // append lock. (Twenty at once queued up to 19 behind the lock, each within the 30 s a
        // database call may take: under the full suite's start-up load the last timed out.)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (first, log) in [(0, harness.audit), (1, second)] {
                group.addTask { for index in stride(from: first, to: 20, by: 2) { try await append(log, index) } }
            }
            try await group.waitForAll()
        }
        for log in [harness.audit, second] {
            let verification = try await log.verify()
            #expect(verification.isIntact && verification.entriesChecked == 20, "\(verification)")
            #expect(verification.hsmAnchoredSeq == 20 && verification.anchoredSeq == 20, "\(verification)")
        }

        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq >= 18")
        for log in [harness.audit, second] {
            let verification = try await log.verify()
            #expect(verification.firstBroken == 18, "\(verification)")
        }
        let refused = await #expect(throws: CustodyError.self) { try await append(second, 99) }
        guard case .auditLogBehindAnchor(anchoredSeq: 20, logSeq: 17) = refused else { Issue.record("got \(String(describing: refused))"); return }
        #expect(try await count(harness) == 17, "nothing appended over the deleted entries")
        await secondDatabase.shutdown()
        await harness.shutdown()
    }

    @Test("Putting back an older anchor file after deleting the newest entries is caught by the HSM anchor")
    func olderAnchorFile() async throws {
        let harness = try await CustodyHarness.make("anchorfile")
        for index in 1...4 { try await append(harness.audit, index) }
        let olderFile = try Data(contentsOf: URL(fileURLWithPath: harness.anchorPath))
        for index in 5...8 { try await append(harness.audit, index) }
        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq >= 5")
        try olderFile.write(to: URL(fileURLWithPath: harness.anchorPath))
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == 5 && verification.hsmAnchoredSeq == 8, "\(verification)")
        await harness.shutdown()
    }

    @Test("Rolling the HSM anchor back to an older value (with the user PIN) is caught by the anchor file")
    func olderHSMAnchor() async throws {
        let harness = try await CustodyHarness.make("anchorhsm")
        for index in 1...4 { try await append(harness.audit, index) }
        let older = try await hsmAnchorValue(harness)
        for index in 5...8 { try await append(harness.audit, index) }
        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq >= 5")
        // The value of a data object is fixed once created: the PIN holder replaces the object.
        try await harness.pool.withPersistentSession { session in
            let handle = try #require(try session.findObjects([.class(.data), .label(AuditHSMAnchor.label)]).first)
            let application = String(decoding: try session.attribute(.application, of: handle), as: UTF8.self)
            try session.destroyObject(handle)
            _ = try session.createObject([
                .class(.data), .token(true), .private(true), .label(AuditHSMAnchor.label), .application(application), .dataValue(older),
            ])
        }
        let verification = try await harness.audit.verify()
        #expect(verification.hsmAnchoredSeq == 4, "the rolled-back HSM anchor itself agrees with the truncated log")
        #expect(verification.firstBroken == 5, "but the file still records entry 8: \(verification)")
        await harness.shutdown()
    }

    @Test("An append whose transaction rolls back is not an alarm, and the next append moves on")
    func rolledBackAppend() async throws {
        let harness = try await CustodyHarness.make("anchorrollback")
        for index in 1...3 { try await append(harness.audit, index) }
        struct Abandon: Error {}
        let audit = harness.audit
        await #expect(throws: Abandon.self) {
            try await harness.service.withTransaction(context: "abandoned action") { connection in
                _ = try await audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: "x", details: [:], on: connection)
                throw Abandon()
            }
        }
        let afterRollback = try await harness.audit.verify()
        #expect(afterRollback.isIntact && afterRollback.entriesChecked == 3, "\(afterRollback)")
        #expect(afterRollback.unconfirmedSeq == 4 && afterRollback.anchoredSeq == 3, "\(afterRollback)")
        try await append(harness.audit, 4)
        let after = try await harness.audit.verify()
        #expect(after.isIntact && after.entriesChecked == 4 && after.anchoredSeq == 4 && after.unconfirmedSeq == nil, "\(after)")
        await harness.shutdown()
    }

    @Test("A torn or foreign last line in the anchor file does not hide the valid lines before it")
    func tornLine() async throws {
        let harness = try await CustodyHarness.make("anchortorn")
        for index in 1...3 { try await append(harness.audit, index) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: harness.anchorPath))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("v2 9 00ff".utf8))
        try handle.close()
        let verification = try await harness.audit.verify()
        #expect(verification.isIntact && verification.anchoredSeq == 3, "\(verification)")
        await harness.shutdown()
    }

    @Test("After a sanctioned restore to an older point, an officer's anchor reset lets appends resume and is itself recorded")
    func resetAfterRestore() async throws {
        let harness = try await CustodyHarness.make("anchorreset")
        for index in 1...6 { try await append(harness.audit, index) }
        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq >= 5")
        await #expect(throws: CustodyError.self) { try await append(harness.audit, 99) }
        #expect(try await harness.audit.resetAnchor(actor: "officer") == 6)
        try await append(harness.audit, 7)
        let verification = try await harness.audit.verify()
        #expect(verification.isIntact && verification.entriesChecked == 6 && verification.hsmAnchoredSeq == 6, "\(verification)")
        let reset = try await harness.owner.withTransaction(context: "read reset") { connection in
            try await connection.query("SELECT seq, details FROM audit_log WHERE action = 'audit.anchor.reset'", logger: Database.quiet)
                .collect().map { try $0.decode((Int64, String).self) }
        }
        #expect(reset.count == 1 && reset[0].0 == 5 && reset[0].1.contains("\"previous_anchored_seq\":\"6\""), "\(reset)")
        await harness.shutdown()
    }
}

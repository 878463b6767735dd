import Foundation
import GRPCCore
import RPC
import SwiftProtobuf
import Testing

/// `custos audit export --since … [--follow]` (issue 11 §4): the AuditExport RPC pages through
/// the chain by sequence number, filters by time, and a later poll with the cursor returns only
/// what was appended since; each entry becomes one JSON line a SIEM can ingest.
@Suite("Admin: audit export for a SIEM", .serialized)
struct AuditExportTests {
    @Test("Pages in sequence order with a cursor, filters by --since, follows new entries; JSON lines carry every field")
    func exportAndFollow() async throws {
        try await RPCHarness.with("auditexport") { rpc in
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                _ = try await admin.createTenant(.with { $0.label = "acme" })
                try await Task.sleep(for: .milliseconds(30))
                let mark = Date()
                try await Task.sleep(for: .milliseconds(30))
                let globex = try await admin.createTenant(.with { $0.label = "globex" }).tenant.tenantID

                // Everything, one entry per page: contiguous, chained, cursor = last sequence.
                var all = [Custos_V1_AuditEntry]()
                var cursor: UInt64 = 0
                while true {
                    let page = try await admin.auditExport(.with { $0.afterSequence = cursor; $0.limit = 1 })
                    #expect(page.entries.count <= 1)
                    guard let entry = page.entries.first else {
                        #expect(page.nextAfterSequence == cursor)
                        break
                    }
                    #expect(page.nextAfterSequence == entry.sequence)
                    all.append(entry)
                    cursor = page.nextAfterSequence
                }
                #expect(all.map(\.sequence) == Array(1...UInt64(all.count)))
                #expect(all.first?.previousHash == String(repeating: "0", count: 64))
                for (previous, entry) in zip(all, all.dropFirst()) { #expect(entry.previousHash == previous.hash) }

                // --since: only entries at or after the mark (globex's creation and its keys).
                let since = try await admin.auditExport(.with { $0.since = Google_Protobuf_Timestamp(date: mark) }).entries
                #expect(!since.isEmpty)
                #expect(since.allSatisfy { $0.at.date >= mark })
                #expect(since.count == all.filter { $0.at.date >= mark }.count)
                #expect(since.count < all.count, "acme's entries came before the mark")
                #expect(since.contains { $0.tenantID == globex })

                // Follow: polling with the cursor returns nothing, then exactly what was appended.
                #expect(try await admin.auditExport(.with { $0.afterSequence = cursor }).entries.isEmpty)
                _ = try await admin.createTenant(.with { $0.label = "initech" })
                let followed = try await admin.auditExport(.with { $0.since = Google_Protobuf_Timestamp(date: mark); $0.afterSequence = cursor })
                #expect(followed.entries.first?.sequence == cursor + 1)
                #expect(followed.entries.contains { $0.action == "tenant.create" })
                #expect(followed.nextAfterSequence == followed.entries.last?.sequence)

                // One JSON line per entry, every field present (tenant null when there is none).
                let line = try AuditExportFormat.line(try #require(since.first { $0.tenantID == globex }))
                #expect(!line.contains("\n"))
                let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
                #expect(Set(object.keys) == ["sequence", "time", "tenant", "actor", "action", "target", "details", "hash", "previous_hash"])
                #expect(object["tenant"] as? String == globex)
                #expect((object["hash"] as? String)?.count == 64)
                #expect(object["details"] is [String: Any])
                let time = try #require(object["time"] as? String)
                #expect(try AuditExportFormat.time(time) >= mark)
                var untenanted = since[0]
                untenanted.tenantID = ""
                let nullTenant = try #require(try JSONSerialization.jsonObject(with: Data(AuditExportFormat.line(untenanted).utf8)) as? [String: Any])
                #expect(nullTenant["tenant"] is NSNull)

                // A page larger than 1000 is the caller's mistake.
                #expect(await RPCHarness.code { _ = try await admin.auditExport(.with { $0.limit = 1_001 }) } == .invalidArgument)
            }
        }
    }

    @Test("--since takes RFC 3339 date-times only, with a message that says what to give")
    func sinceParsing() throws {
        #expect(try AuditExportFormat.time("2026-12-05T16:50:00Z") == Date(timeIntervalSince1970: 1_796_489_400))
        #expect(try AuditExportFormat.time("2026-12-05T17:50:00.250+01:00") == Date(timeIntervalSince1970: 1_796_489_400.25))
        #expect(try AuditExportFormat.time("2026-12-05 16:50:00z") == Date(timeIntervalSince1970: 1_796_489_400))
        for bad in ["yesterday", "2026-12-05", "2026-12-05T16:50:00", "2026-13-05T16:50:00Z", "1796489400", ""] {
            #expect(throws: AuditExportFormat.InvalidTime.self, "\(bad)") { try AuditExportFormat.time(bad) }
        }
        do {
            _ = try AuditExportFormat.time("yesterday")
        } catch {
            #expect(error.description.hasPrefix("--since: \"yesterday\" is not an RFC 3339 time"))
        }
    }
}

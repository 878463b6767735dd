import CustosModel
import Foundation
@testable import Storage
import Testing

/// The poll behind the galleries' catch-up (issue 12: no NOTIFY in an enrolment's transaction):
/// a template written by any transaction the last read could not see is found by the next poll,
/// whatever order the writers committed in.
@Suite("Storage: template changes since a snapshot (the galleries' catch-up poll)")
struct TemplateChangesTests {
    static func token(_ value: UInt32) -> BiometricToken {
        BiometricToken(keyVersion: 1, format: .compact, values: [UInt32](repeating: value, count: BiometricTokenFormat.compact.shape.positions))
    }

    @Test("A template whose writer took its transaction id first but committed last is found by the poll after its commit")
    func commitOrder() async throws {
        let harness = try await CustodyHarness.make("tchanges")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "test").id
        let other = try await harness.keyring.createTenant(label: "other", actor: "test").id
        let database = harness.service
        let early = SubjectReference(value: "subject-early", piiVersion: 1)
        let late = SubjectReference(value: "subject-late", piiVersion: 1)
        func poll(_ tenant: TenantID, since: UInt64) async throws -> (watermark: UInt64, subjects: [String]) {
            try await database.withTenant(tenant, context: "test poll") { connection in
                let watermark = try await TemplateStore.changeWatermark(on: connection)
                let rows = try await TemplateStore.changes(since: since, keyVersions: [1], on: connection)
                return (watermark, rows.map(\.subject).sorted())
            }
        }
        // What a gallery loaded now would start its polls from.
        let loaded = try await poll(tenant, since: 0)
        #expect(loaded.subjects.isEmpty)

        // The early writer stores its template (its transaction has its id now) and waits.
        let (written, wrote) = AsyncStream<Void>.makeStream()
        let (release, released) = AsyncStream<Void>.makeStream()
        let slowWriter = Task {
            try await database.withTenant(tenant, context: "test slow writer") { connection in
                try await TemplateStore.upsert(subject: early, token: Self.token(3), seal: .unchecked, tenant: tenant, on: connection)
                wrote.yield()
                for await _ in release { break }
            }
        }
        for await _ in written { break }
        // A later writer commits first; a poll sees its template only.
        try await database.withTenant(tenant, context: "test late writer") { connection in
            try await TemplateStore.upsert(subject: late, token: Self.token(5), seal: .unchecked, tenant: tenant, on: connection)
        }
        let first = try await poll(tenant, since: loaded.watermark)
        #expect(first.subjects == [late.value])

        // The early writer commits: the next poll, from the first one's watermark, finds it.
        released.yield()
        try await slowWriter.value
        let ids = try await database.withTenant(tenant, context: "test ids") { connection in
            var ids = [String: Int64]()
            for try await (subject, id) in try await connection.query(
                "SELECT subject_ref, changed_xid::text::bigint FROM templates", logger: Database.quiet
            ).decode((String, Int64).self) { ids[subject] = id }
            return ids
        }
        // The case this test is about: a watermark past the largest id seen would skip it.
        #expect(try #require(ids[early.value]) < (try #require(ids[late.value])))
        let second = try await poll(tenant, since: first.watermark)
        #expect(second.subjects.contains(early.value), "a template that committed after a poll, under an older transaction id, is not skipped")

        // A replaced token is a change too; another tenant's poll sees none of it.
        try await database.withTenant(tenant, context: "test replace") { connection in
            try await TemplateStore.upsert(subject: late, token: Self.token(7), seal: .unchecked, tenant: tenant, on: connection)
        }
        let third = try await poll(tenant, since: second.watermark)
        #expect(third.subjects.contains(late.value))
        #expect(try await poll(other, since: 0).subjects.isEmpty)
        await harness.shutdown()
    }
}

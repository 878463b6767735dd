import Custody
import CustosModel
import Foundation
import Storage
import Testing
@testable import Verification

@Suite("A subject's export in pages")
struct SubjectExportPagingTests {
    @Test("Pages of sessions, oldest first, join into the whole export: none repeated or skipped, even when creation times tie to the microsecond or the session a token points at is deleted; each page audited")
    func pagesJoinIntoTheExport() async throws {
        let verification = try await VerificationHarness.make("exportpages")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        for index in 0..<8 {
            _ = try await verification.sessions.create(
                tenant: tenant, externalID: PersonalText("emp-7"), name: PersonalText("Person \(index)"), email: PersonalText("p\(index)@example.net")
            )
        }
        _ = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("someone-else"), name: nil, email: nil)
        // Five sessions share one creation time whose microseconds a Double cannot hold exactly:
        // the order falls back to their ids, and a token rounded by a `Date` would repeat or skip.
        try await verification.custody.ownerSQL(tenant: tenant, """
            UPDATE verification_sessions SET created_at = '2026-03-01 10:00:00.987651+00'
            WHERE id IN (SELECT id FROM verification_sessions ORDER BY id LIMIT 5)
            """)
        let whole = try await verification.rights.export(tenant: tenant, externalID: PersonalText("emp-7"), actor: "dpo")
        #expect(whole.sessions.count == 8)

        var pages = [SubjectExport.Page]()
        var token = ""
        repeat {
            let page = try await verification.rights.export(
                tenant: tenant, externalID: PersonalText("emp-7"), actor: "dpo", paging: try SubjectExportPaging(size: 3, token: token)
            )
            pages.append(page)
            token = page.nextPageToken ?? ""
        } while !token.isEmpty && pages.count < 10
        #expect(pages.map(\.export.sessions.count) == [3, 3, 2])
        #expect(pages.map { $0.nextPageToken == nil } == [false, false, true])
        let joined = pages.flatMap(\.export.sessions)
        #expect(joined.map(\.id) == whole.sessions.map(\.id), "the same sessions in the same order")
        #expect(joined.map(\.candidateName) == whole.sessions.map(\.candidateName), "names decrypted on every page")
        #expect(pages.allSatisfy { $0.export.subjectReferences == whole.subjectReferences && $0.export.biometricTemplates == whole.biometricTemplates })
        let reread = try SubjectExport(json: try pages[1].export.json())
        #expect(reread.sessions.map(\.candidateEmail) == pages[1].export.sessions.map(\.candidateEmail), "a page reads back from its JSON")

        // The session the first page's token points at is erased meanwhile: the next page still
        // starts right after it.
        let first = try await verification.rights.export(
            tenant: tenant, externalID: PersonalText("emp-7"), actor: "dpo", paging: try SubjectExportPaging(size: 3, token: "")
        )
        let last = try #require(first.export.sessions.last?.id)
        try await verification.custody.ownerSQL(tenant: tenant, "DELETE FROM verification_sessions WHERE id = \(try #require(UUID(uuidString: last)))")
        let second = try await verification.rights.export(
            tenant: tenant, externalID: PersonalText("emp-7"), actor: "dpo", paging: try SubjectExportPaging(size: 3, token: try #require(first.nextPageToken))
        )
        #expect(second.export.sessions.map(\.id) == Array(whole.sessions.map(\.id)[3..<6]))

        let audited = try await verification.auditEntries("subject.export")
        #expect(audited.count == 1 + 3 + 2, "one entry per page")
        #expect(audited.filter { $0.details.contains("\"more\"") }.count == 5)
        for entry in audited {
            #expect(!entry.details.contains("Person") && !entry.details.contains("example.net"), "names stay out of the audit log")
        }
        await verification.custody.shutdown()
    }

    @Test("A page size of 0, a token this service did not issue, or a cut one is INVALID_ARGUMENT; a size past the maximum counts as the maximum")
    func pagingRefusals() throws {
        #expect(throws: VerificationError.invalidArgument(field: "page_size", reason: "at least 1 when paging")) {
            try SubjectExportPaging(size: 0, token: "")
        }
        #expect(try SubjectExportPaging(size: 100_000, token: "").size == SubjectExportPaging.maximumSize)
        let position = SessionStore.Position(createdAtMicroseconds: 825_674_400_987_651, id: UUID())
        let token = SubjectExportPaging.token(position)
        #expect(try SubjectExportPaging(size: 1, token: token).after == position, "a token reads back to its position")
        for bad in ["x", String(token.dropLast()), token + "A", "!" + token.dropFirst(), String(repeating: "A", count: 34), "é" + token.dropFirst(2)] {
            #expect(throws: VerificationError.self, "\(bad)") { try SubjectExportPaging(size: 1, token: bad) }
        }
    }
}

import Foundation
import GRPCCore
import RPC
import Testing
import Verification

/// `ExportSubject`'s paging over the RPC, as `custos subject export` follows it.
@Suite("Admin: a subject's export page by page over the RPC")
struct SubjectExportRPCTests {
    @Test("The client follows next_page_token and joins the pages, as JSON, into the unpaged export; a page of the largest sessions the RPC accepts stays far below a client's 4 MiB")
    func pagesOverTheRPC() async throws {
        try await RPCHarness.with("rpcexport") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            // The largest name and email CreateSession takes, of the character JSON doubles.
            let largest = (name: String(repeating: "\"", count: 512), email: String(repeating: "/", count: 320))
            try await rpc.withClient(.frontend) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                for index in 0..<5 {
                    _ = try await verification.createSession(
                        .with { $0.subjectExternalID = "candidate-9"; $0.candidateName = "Ada \(index)" }, metadata: tenantMetadata(tenant)
                    )
                }
                _ = try await verification.createSession(
                    .with { $0.subjectExternalID = "candidate-9"; $0.candidateName = largest.name; $0.candidateEmail = largest.email },
                    metadata: tenantMetadata(tenant)
                )
            }
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let unpaged = try await admin.exportSubject(.with { $0.tenantID = tenant; $0.subjectExternalID = "candidate-9" })
                #expect(unpaged.nextPageToken.isEmpty, "a client that does not page gets everything at once")
                let whole = try SubjectExport(json: unpaged.json)
                #expect(whole.sessions.count == 6)

                let first = try await admin.exportSubject(.with { $0.tenantID = tenant; $0.subjectExternalID = "candidate-9"; $0.pageSize = 4 })
                #expect(try SubjectExport(json: first.json).sessions.count == 4 && !first.nextPageToken.isEmpty)
                let second = try await admin.exportSubject(.with {
                    $0.tenantID = tenant; $0.subjectExternalID = "candidate-9"; $0.pageSize = 4; $0.pageToken = first.nextPageToken
                })
                #expect(try SubjectExport(json: second.json).sessions.count == 2 && second.nextPageToken.isEmpty)

                let joined = try SubjectExport(json: try await admin.exportSubjectInPages(tenantID: tenant, externalID: "candidate-9", pageSize: 2))
                #expect(joined.sessions.map(\.id) == whole.sessions.map(\.id))
                #expect(joined.sessions.map(\.candidateName) == whole.sessions.map(\.candidateName))
                #expect(joined.subjectReferences == whole.subjectReferences && joined.tenant == whole.tenant)
                let fields = { (json: Data) in Set(((try JSONSerialization.jsonObject(with: json) as? [String: Any]) ?? [:]).keys) }
                #expect(try fields(try await admin.exportSubjectInPages(tenantID: tenant, externalID: "candidate-9", pageSize: 2)) == fields(unpaged.json))
                let onePage = try await admin.exportSubjectInPages(tenantID: tenant, externalID: "candidate-9")
                #expect(try SubjectExport(json: onePage).sessions.map(\.id) == whole.sessions.map(\.id), "one page, as the server wrote it")

                let biggest = try #require(whole.sessions.first { $0.candidateName == largest.name })
                #expect(biggest.candidateEmail == largest.email)
                let fullPage = SubjectExport(
                    tenant: whole.tenant, exportedAt: whole.exportedAt, subjectReferences: whole.subjectReferences, biometricTemplates: whole.biometricTemplates,
                    sessions: Array(repeating: biggest, count: SubjectExportPaging.maximumSize)
                )
                let bytes = try fullPage.json().count
                #expect(bytes < 2 << 20, "a page of \(SubjectExportPaging.maximumSize) of the largest sessions: \(bytes) bytes")
            }
        }
    }
}

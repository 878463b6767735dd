import GRPCCore
public import Verification

/// A server handed back a page token it had handed back before: following it would ask for the
/// same pages forever.
public struct RepeatedPageTokenError: Error, Hashable, CustomStringConvertible {
    public var description: String { "the server handed back a page token of the subject export a second time" }
}

extension Custos_V1_Admin.Client {
    /// The whole export of the subject `externalID` names: asked for page by page (one message
    /// holds a few thousand sessions at most) and joined into one document.
    ///
    /// - Throws: the RPC's error, or ``RepeatedPageTokenError``.
    public func exportSubjectInPages(
        tenantID: String, externalID: String, pageSize: Int = SubjectExportPaging.maximumSize
    ) async throws -> SubjectExport {
        func page(_ token: String) async throws -> (export: SubjectExport, next: String) {
            let response = try await exportSubject(.with {
                $0.tenantID = tenantID
                $0.subjectExternalID = externalID
                $0.pageSize = UInt32(clamping: pageSize)
                $0.pageToken = token
            })
            return (try SubjectExport(json: response.json), response.nextPageToken)
        }
        var (export, token) = try await page("")
        var asked = Set<String>()
        while !token.isEmpty {
            guard asked.insert(token).inserted else { throw RepeatedPageTokenError() }
            let next = try await page(token)
            export = export.appending(next.export)
            token = next.next
        }
        return export
    }
}

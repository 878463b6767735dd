public import Foundation
public import Verification

/// Why the pages of a subject export could not be joined.
public enum SubjectExportPagingError: Error, Hashable, CustomStringConvertible {
    /// The server handed back a page token it had handed back before: following it would ask
    /// for the same pages forever.
    case repeatedPageToken
    /// A page was not a JSON object with a `sessions` array.
    case malformedPage

    public var description: String {
        switch self {
        case .repeatedPageToken: "the server handed back a page token of the subject export a second time"
        case .malformedPage: "a page of the subject export is not a JSON object with a sessions array"
        }
    }
}

extension Custos_V1_Admin.Client {
    /// The whole export of the subject `externalID` names, as JSON: asked for page by page (one
    /// message holds a few thousand sessions at most) and joined into one document.
    ///
    /// The pages are joined as JSON, not through ``SubjectExport``: a client older than the
    /// server would otherwise drop, without a word, every field it does not know. The first page
    /// gives everything but the sessions (its time, references and templates: each page holds the
    /// subject's complete list, as of that page); the sessions are every page's, in page order.
    /// One page comes back as the server wrote it.
    ///
    /// - Throws: the RPC's error, or ``SubjectExportPagingError``.
    public func exportSubjectInPages(
        tenantID: String, externalID: String, pageSize: Int = SubjectExportPaging.maximumSize
    ) async throws -> Data {
        func page(_ token: String) async throws -> Custos_V1_ExportSubjectResponse {
            try await exportSubject(.with {
                $0.tenantID = tenantID
                $0.subjectExternalID = externalID
                $0.pageSize = UInt32(clamping: pageSize)
                $0.pageToken = token
            })
        }
        func object(_ json: Data) throws -> (document: [String: Any], sessions: [Any]) {
            guard let document = try JSONSerialization.jsonObject(with: json) as? [String: Any], let sessions = document["sessions"] as? [Any] else {
                throw SubjectExportPagingError.malformedPage
            }
            return (document, sessions)
        }
        let first = try await page("")
        guard !first.nextPageToken.isEmpty else { return first.json }
        var (document, sessions) = try object(first.json)
        var token = first.nextPageToken
        var asked = Set<String>()
        while !token.isEmpty {
            guard asked.insert(token).inserted else { throw SubjectExportPagingError.repeatedPageToken }
            let next = try await page(token)
            sessions += try object(next.json).sessions
            token = next.nextPageToken
        }
        document["sessions"] = sessions
        return try JSONSerialization.data(withJSONObject: document, options: [.prettyPrinted, .sortedKeys])
    }
}

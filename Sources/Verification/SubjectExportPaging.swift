import Foundation
public import Storage

/// Which page of a subject's export to make (ExportSubject's `page_size` and `page_token`,
/// AIP-158). Sessions are what grows — a subject seen a few thousand times outgrows one 4 MiB
/// message — so a page holds at most ``maximumSize`` of them, oldest first.
///
/// The token is the position after the previous page's last session, base64url-encoded so that
/// callers treat it as opaque. It is not authenticated: it can only move the start of the caller's
/// own export of a subject it may already export in full, within its own tenant.
public struct SubjectExportPaging: Sendable, Hashable {
    /// A page of 500 of the largest sessions CreateSession accepts (512-byte names and 320-byte
    /// emails of characters JSON escapes) encodes to under 2 MiB, half a client's limit.
    public static let maximumSize = 500

    public let size: Int
    public let after: SessionStore.Position?

    /// - Parameters:
    ///   - size: sessions per page; larger values count as ``maximumSize``.
    ///   - token: the previous page's ``SubjectExport/Page/nextPageToken``, or empty for the first.
    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` for a size of 0 or a token
    ///   this service did not issue.
    public init(size: Int, token: String) throws {
        guard size > 0 else { throw VerificationError.invalidArgument(field: "page_size", reason: "at least 1 when paging") }
        self.size = min(size, Self.maximumSize)
        self.after = token.isEmpty ? nil : try Self.position(token)
    }

    private static let format: UInt8 = 1

    static func token(_ position: SessionStore.Position) -> String {
        var bytes = [format]
        withUnsafeBytes(of: position.createdAtMicroseconds.bigEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: position.id.uuid) { bytes.append(contentsOf: $0) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    private static func position(_ token: String) throws -> SessionStore.Position {
        let malformed = VerificationError.invalidArgument(field: "page_token", reason: "not a page token of this export")
        guard token.utf8.count == 34, token.utf8.allSatisfy({ $0 < 0x80 }) else { throw malformed }
        let standard = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/") + "=="
        guard let data = Data(base64Encoded: standard), data.count == 25, data.first == format else { throw malformed }
        let bytes = [UInt8](data)
        let micros = bytes[1..<9].reduce(Int64(0)) { $0 << 8 | Int64($1) }
        let id = bytes[9..<25].withUnsafeBytes { UUID(uuid: $0.loadUnaligned(as: uuid_t.self)) }
        return SessionStore.Position(createdAtMicroseconds: micros, id: id)
    }
}

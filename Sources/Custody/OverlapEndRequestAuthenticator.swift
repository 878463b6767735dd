import CustosModel
import Foundation
import HSM
import Storage

/// The HSM MAC over a request to end a biometric overlap early, made when it is recorded
/// (``DestructionApprovalAuthenticator``'s request scheme, with its own domain): a request
/// written into the database, or one whose requester was changed, does not verify, so one
/// officer cannot name another as requester and approve alone.
enum OverlapEndRequestAuthenticator {
    static let requestDomain = "custos/overlap_end_requests/request/v1"

    static func requestMessage(for row: OverlapEndRequestStore.Row) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: requestDomain)
        encoding.append(row.id.uuidString.lowercased())
        encoding.append(row.tenant.rawValue)
        encoding.append(row.version)
        encoding.append(row.requestedBy)
        encoding.append(DestructionApprovalAuthenticator.microseconds(row.requestedAt))
        encoding.append(DestructionApprovalAuthenticator.microseconds(row.expiresAt))
        return encoding.bytes
    }

    /// Whether `row` carries a request MAC that verifies: only requests recorded by Custos do.
    static func isAuthenticRequest(_ row: OverlapEndRequestStore.Row, pool: SessionPool) async throws -> Bool {
        guard let stored = row.requestMAC, let version = row.requestMACVersion else { return false }
        return try await rootMACVerifies(stored, of: requestMessage(for: row), macVersion: version, pool: pool)
    }
}

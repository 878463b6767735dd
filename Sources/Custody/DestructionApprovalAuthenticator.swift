import CustosModel
import Foundation
import HSM
import Storage

/// Computes and checks the HSM MAC over a key-destruction approval, under the root MAC key as
/// ``KeyVersionAuthenticator`` does for key rows but with its own domain: whoever can write to
/// `destruction_requests` without the HSM cannot approve a request, nor move an approval to
/// another request, nor extend one past its expiry.
struct DestructionApprovalAuthenticator: Sendable {
    static let domain = "custos/destruction_requests/v1"

    /// The bytes the MAC covers: the request (id, tenant, purpose, version, requester, expiry)
    /// and the approval (approver, the approver's certificate serial, when).
    static func message(for row: DestructionRequestStore.Row, approvedBy: String, certificateSerial: String, approvedAt: Date) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(row.id.uuidString.lowercased())
        encoding.append(row.tenant.rawValue)
        encoding.append(row.purpose.rawValue)
        encoding.append(row.version)
        encoding.append(row.requestedBy)
        encoding.append(microseconds(row.expiresAt))
        encoding.append(approvedBy)
        encoding.append(certificateSerial)
        encoding.append(microseconds(approvedAt))
        // Scheduled requests: the waiting period too, so a database writer cannot bring the
        // destruction forward (absent on requests from before scheduling, whose MACs stand).
        if let days = row.waitingDays {
            encoding.append("waiting_days")
            encoding.append(days)
        }
        return encoding.bytes
    }

    static let requestDomain = "custos/destruction_requests/request/v1"

    /// The bytes a request's own MAC covers, made when it is recorded: everything the approver
    /// is asked to approve. Without it a database writer could change a pending request (its
    /// waiting period, its requester) before a second officer approves the altered one.
    static func requestMessage(for row: DestructionRequestStore.Row) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: requestDomain)
        encoding.append(row.id.uuidString.lowercased())
        encoding.append(row.tenant.rawValue)
        encoding.append(row.purpose.rawValue)
        encoding.append(row.version)
        encoding.append(row.requestedBy)
        encoding.append(microseconds(row.requestedAt))
        encoding.append(microseconds(row.expiresAt))
        encoding.append(row.waitingDays.map(String.init) ?? "unscheduled")
        return encoding.bytes
    }

    /// The MAC for a new request, with the root MAC key version it was made under.
    func requestMAC(for row: DestructionRequestStore.Row, pool: SessionPool, rootKeys: RootKeys) async throws -> (mac: [UInt8], version: Int) {
        (try await pool.hmacSHA256(key: rootKeys.mac, data: Self.requestMessage(for: row)), rootKeys.macVersion)
    }

    /// Whether `row` carries a request MAC that verifies: only requests recorded by Custos do.
    func isAuthenticRequest(_ row: DestructionRequestStore.Row, pool: SessionPool) async throws -> Bool {
        guard let stored = row.requestMAC, let version = row.requestMACVersion else { return false }
        return try await rootMACVerifies(stored, of: Self.requestMessage(for: row), macVersion: version, pool: pool)
    }

    /// PostgreSQL keeps microseconds; callers pass dates as read back from it (or truncated to
    /// whole seconds), so both sides round the same value.
    static func microseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
    }

    /// The MAC for an approval, with the root MAC key version it was made under.
    func mac(for row: DestructionRequestStore.Row, approvedBy: String, certificateSerial: String, approvedAt: Date, pool: SessionPool, rootKeys: RootKeys) async throws -> (mac: [UInt8], version: Int) {
        let message = Self.message(for: row, approvedBy: approvedBy, certificateSerial: certificateSerial, approvedAt: approvedAt)
        return (try await pool.hmacSHA256(key: rootKeys.mac, data: message), rootKeys.macVersion)
    }

    /// Whether `row` carries an approval whose MAC verifies under the root MAC key it names.
    func isAuthentic(_ row: DestructionRequestStore.Row, pool: SessionPool) async throws -> Bool {
        guard let approvedBy = row.approvedBy, let approvedAt = row.approvedAt, let serial = row.approverCertificateSerial,
              let stored = row.approvalMAC, let version = row.approvalMACVersion else { return false }
        let message = Self.message(for: row, approvedBy: approvedBy, certificateSerial: serial, approvedAt: approvedAt)
        return try await rootMACVerifies(stored, of: message, macVersion: version, pool: pool)
    }
}

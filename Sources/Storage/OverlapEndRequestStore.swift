public import CustosModel
public import Foundation
import PostgresNIO

/// `overlap_end_requests`: ending a biometric rotation's overlap before its window closes, asked
/// for by one officer and approved by a different one before the request expires. Approval and
/// the end itself commit in one transaction, so an approval is never stored apart from its effect
/// (unlike a scheduled destruction, nothing is carried out later on the strength of a stored
/// approval, which is why this table needs no approval MAC). The request itself carries a MAC
/// from the moment it is recorded: without it, a request written into the database naming
/// another officer as requester would let one officer end an overlap alone.
public enum OverlapEndRequestStore {
    public struct Row: Sendable, Hashable {
        public let id: UUID
        public let tenant: TenantID
        /// The biometric version (`bio-seed` and `bio-prf`) whose overlap ends.
        public let version: Int
        public let requestedBy: String
        public let requestedAt: Date
        public let expiresAt: Date
        public let approvedBy: String?
        public let approvedAt: Date?
        public let approverCertificateSerial: String?
        /// The root-MAC over the request as recorded, and the MAC key version it used.
        public let requestMAC: [UInt8]?
        public let requestMACVersion: Int?

        public init(
            id: UUID, tenant: TenantID, version: Int, requestedBy: String, requestedAt: Date, expiresAt: Date,
            approvedBy: String? = nil, approvedAt: Date? = nil, approverCertificateSerial: String? = nil,
            requestMAC: [UInt8]? = nil, requestMACVersion: Int? = nil
        ) {
            self.id = id
            self.tenant = tenant
            self.version = version
            self.requestedBy = requestedBy
            self.requestedAt = requestedAt
            self.expiresAt = expiresAt
            self.approvedBy = approvedBy
            self.approvedAt = approvedAt
            self.approverCertificateSerial = approverCertificateSerial
            self.requestMAC = requestMAC
            self.requestMACVersion = requestMACVersion
        }
    }

    public static func insert(_ row: Row, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO overlap_end_requests (id, tenant_id, version, requested_by, requested_at, expires_at, request_mac, request_mac_version)
            VALUES (\(row.id), \(row.tenant.rawValue)::uuid, \(row.version), \(row.requestedBy), \(row.requestedAt), \(row.expiresAt),
                    \(row.requestMAC.map { Data($0) }), \(row.requestMACVersion))
            """, logger: Database.quiet)
    }

    /// Locks the row until the transaction ends (approving).
    public static func lock(_ id: UUID, on connection: DatabaseTransaction) async throws -> Row? {
        let rows = try await connection.query("""
            SELECT id, tenant_id::text, version, requested_by, requested_at, expires_at, approved_by, approved_at, approver_certificate_serial,
                   request_mac, request_mac_version
            FROM overlap_end_requests WHERE id = \(id) FOR UPDATE
            """, logger: Database.quiet)
        for try await cells in rows {
            let row = try cells.decode((UUID, String, Int, String, Date, Date, String?, Date?, String?, Data?, Int?).self)
            guard let tenant = TenantID(row.1) else { return nil }
            return Row(
                id: row.0, tenant: tenant, version: row.2, requestedBy: row.3, requestedAt: row.4, expiresAt: row.5,
                approvedBy: row.6, approvedAt: row.7, approverCertificateSerial: row.8,
                requestMAC: row.9.map { [UInt8]($0) }, requestMACVersion: row.10
            )
        }
        return nil
    }

    public static func approve(_ id: UUID, by officer: String, certificateSerial: String, at now: Date, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            UPDATE overlap_end_requests SET approved_by = \(officer), approved_at = \(now), approver_certificate_serial = \(certificateSerial)
            WHERE id = \(id)
            """, logger: Database.quiet)
    }
}

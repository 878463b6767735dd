public import CustosModel
public import Foundation
import PostgresNIO

/// `destruction_requests`: a key version's destruction asked for by one officer, approved by a
/// different one before it expires, then carried out once.
public enum DestructionRequestStore {
    public struct Row: Sendable, Hashable, Codable {
        public let id: UUID
        public let tenant: TenantID
        public let purpose: KeyPurpose
        public let version: Int
        public let requestedBy: String
        public let requestedAt: Date
        public let expiresAt: Date
        public let approvedBy: String?
        public let approvedAt: Date?
        public let executedAt: Date?
        /// The serial (lower-case hex) of the certificate the approver called with: the approval
        /// stops counting once that certificate is revoked.
        public let approverCertificateSerial: String?
        /// The HSM MAC over the approval (``approvalMACVersion`` names the root MAC key): an
        /// approval written into the database by anyone else has none that verifies.
        public let approvalMAC: [UInt8]?
        public let approvalMACVersion: Int?
        /// Days between approval and destruction (scheduled deletion); `nil` on requests made
        /// before scheduling existed, which are carried out at once after approval.
        public let waitingDays: Int?
        public let cancelledBy: String?
        public let cancelledAt: Date?
        /// The HSM MAC over the request itself, made when it was recorded
        /// (``requestMACVersion`` names the root MAC key): a request written or changed in the
        /// database by anyone else cannot be approved.
        public let requestMAC: [UInt8]?
        public let requestMACVersion: Int?

        /// When a scheduled destruction becomes due: approval time plus the waiting days.
        public var dueAt: Date? {
            guard let approvedAt, let waitingDays else { return nil }
            return approvedAt.addingTimeInterval(Double(waitingDays) * 86_400)
        }

        public init(
            id: UUID, tenant: TenantID, purpose: KeyPurpose, version: Int, requestedBy: String, requestedAt: Date,
            expiresAt: Date, approvedBy: String?, approvedAt: Date?, executedAt: Date?,
            approverCertificateSerial: String? = nil, approvalMAC: [UInt8]? = nil, approvalMACVersion: Int? = nil,
            waitingDays: Int? = nil, cancelledBy: String? = nil, cancelledAt: Date? = nil,
            requestMAC: [UInt8]? = nil, requestMACVersion: Int? = nil
        ) {
            self.requestMAC = requestMAC
            self.requestMACVersion = requestMACVersion
            self.id = id
            self.tenant = tenant
            self.purpose = purpose
            self.version = version
            self.requestedBy = requestedBy
            self.requestedAt = requestedAt
            self.expiresAt = expiresAt
            self.approvedBy = approvedBy
            self.approvedAt = approvedAt
            self.executedAt = executedAt
            self.approverCertificateSerial = approverCertificateSerial
            self.approvalMAC = approvalMAC
            self.approvalMACVersion = approvalMACVersion
            self.waitingDays = waitingDays
            self.cancelledBy = cancelledBy
            self.cancelledAt = cancelledAt
        }
    }

    public static func insert(_ row: Row, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO destruction_requests (id, tenant_id, purpose, version, requested_by, requested_at, expires_at, waiting_days,
                request_mac, request_mac_version)
            VALUES (\(row.id), \(row.tenant.rawValue)::uuid, \(row.purpose.rawValue), \(row.version), \(row.requestedBy), \(row.requestedAt),
                \(row.expiresAt), \(row.waitingDays), \(row.requestMAC.map { Data($0) }), \(row.requestMACVersion))
            """, logger: Database.quiet)
    }

    private static let columns = """
        id, tenant_id::text, purpose, version, requested_by, requested_at, expires_at, approved_by, approved_at, executed_at,
        approver_certificate_serial, approval_mac, approval_mac_version, waiting_days, cancelled_by, cancelled_at,
        request_mac, request_mac_version
        """

    /// - Parameter forUpdate: lock the row until the transaction ends (approving, cancelling,
    ///   carrying out), without waiting for it: a row another transaction holds throws
    ///   ``StorageError/locked(_:)`` at once. Carrying out holds the row while the keyring works
    ///   on a second connection of the same pool; a caller waiting for the row on a connection
    ///   of its own could take the last one (with two, both waited until the operation timeout).
    public static func get(_ id: UUID, forUpdate: Bool, on connection: DatabaseTransaction) async throws -> Row? {
        let query: PostgresQuery = forUpdate
            ? "SELECT \(unescaped: columns) FROM destruction_requests WHERE id = \(id) FOR UPDATE NOWAIT"
            : "SELECT \(unescaped: columns) FROM destruction_requests WHERE id = \(id)"
        do {
            return try await decode(connection.query(query, logger: Database.quiet)).first
        } catch let error as PSQLError {
            throw StorageError.from(error, context: "key destruction request")
        }
    }

    /// Approved scheduled requests neither carried out nor cancelled (the sweep's candidates;
    /// it checks each one's approval and due time itself).
    public static func scheduled(on connection: DatabaseTransaction) async throws -> [Row] {
        try await decode(connection.query("""
            SELECT \(unescaped: columns) FROM destruction_requests
            WHERE approved_at IS NOT NULL AND waiting_days IS NOT NULL AND executed_at IS NULL AND cancelled_at IS NULL
            ORDER BY approved_at
            """, logger: Database.quiet))
    }

    public static func cancel(_ id: UUID, by officer: String, at now: Date, on connection: DatabaseTransaction) async throws {
        try await connection.query(
            "UPDATE destruction_requests SET cancelled_by = \(officer), cancelled_at = \(now) WHERE id = \(id)", logger: Database.quiet
        )
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [Row] {
        var found = [Row]()
        for try await cells in rows {
            let row = try cells.decode((UUID, String, String, Int, String, Date, Date, String?, Date?, Date?, String?, Data?, Int?).self)
            let columns = cells.makeRandomAccess()
            let (waitingDays, cancelledBy, cancelledAt) = (
                try columns[13].decode(Int?.self), try columns[14].decode(String?.self), try columns[15].decode(Date?.self)
            )
            let (requestMAC, requestMACVersion) = (try columns[16].decode(Data?.self), try columns[17].decode(Int?.self))
            guard let tenant = TenantID(row.1), let purpose = KeyPurpose(rawValue: row.2) else { continue }
            found.append(Row(
                id: row.0, tenant: tenant, purpose: purpose, version: row.3, requestedBy: row.4, requestedAt: row.5,
                expiresAt: row.6, approvedBy: row.7, approvedAt: row.8, executedAt: row.9,
                approverCertificateSerial: row.10, approvalMAC: row.11.map { Array($0) }, approvalMACVersion: row.12,
                waitingDays: waitingDays, cancelledBy: cancelledBy, cancelledAt: cancelledAt,
                requestMAC: requestMAC.map { Array($0) }, requestMACVersion: requestMACVersion
            ))
        }
        return found
    }

    public static func approve(
        _ id: UUID, by officer: String, certificateSerial: String, at now: Date, mac: [UInt8], macVersion: Int, on connection: DatabaseTransaction
    ) async throws {
        try await connection.query("""
            UPDATE destruction_requests SET approved_by = \(officer), approved_at = \(now), approver_certificate_serial = \(certificateSerial),
                approval_mac = \(Data(mac)), approval_mac_version = \(macVersion)
            WHERE id = \(id)
            """, logger: Database.quiet)
    }

    public static func markExecuted(_ id: UUID, at now: Date, on connection: DatabaseTransaction) async throws {
        try await connection.query("UPDATE destruction_requests SET executed_at = \(now) WHERE id = \(id)", logger: Database.quiet)
    }
}

/// `revoked_certificates`: officer (or front-end) certificates refused from now on, by serial.
public enum CertificateRevocationStore {
    /// Every revoked serial (a short list: officers and front-ends are few).
    public static func all(on connection: DatabaseTransaction) async throws -> Set<String> {
        var serials = Set<String>()
        for try await serial in try await connection.query("SELECT serial FROM revoked_certificates", logger: Database.quiet).decode(String.self) {
            serials.insert(serial)
        }
        return serials
    }

    public static func revoke(serial: String, subject: String, by officer: String, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO revoked_certificates (serial, subject, revoked_by) VALUES (\(serial), \(subject), \(officer))
            ON CONFLICT (serial) DO NOTHING
            """, logger: Database.quiet)
    }
}

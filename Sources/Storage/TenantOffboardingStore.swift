public import CustosModel
public import Foundation
import PostgresNIO

/// `tenant_offboardings`: a tenant's removal asked for by one officer, approved by a different
/// one before the request expires, carried out `waitingDays` after approval.
public enum TenantOffboardingStore {
    public struct Row: Sendable, Hashable {
        public let id: UUID
        public let tenant: TenantID
        public let requestedBy: String
        public let requestedAt: Date
        public let expiresAt: Date
        public let waitingDays: Int
        public let approvedBy: String?
        public let approvedAt: Date?
        public let approverCertificateSerial: String?
        public let approvalMAC: [UInt8]?
        public let approvalMACVersion: Int?
        public let completedAt: Date?
        /// The HSM MAC over the request itself, made when it was recorded: one written or changed
        /// in the database by anyone else cannot be approved.
        public let requestMAC: [UInt8]?
        public let requestMACVersion: Int?

        /// When the tenant's keys and data go: approval time plus the waiting days.
        public var dueAt: Date? { approvedAt.map { $0.addingTimeInterval(Double(waitingDays) * 86_400) } }

        public init(
            id: UUID, tenant: TenantID, requestedBy: String, requestedAt: Date, expiresAt: Date, waitingDays: Int,
            approvedBy: String? = nil, approvedAt: Date? = nil, approverCertificateSerial: String? = nil,
            approvalMAC: [UInt8]? = nil, approvalMACVersion: Int? = nil, completedAt: Date? = nil,
            requestMAC: [UInt8]? = nil, requestMACVersion: Int? = nil
        ) {
            self.requestMAC = requestMAC
            self.requestMACVersion = requestMACVersion
            self.id = id
            self.tenant = tenant
            self.requestedBy = requestedBy
            self.requestedAt = requestedAt
            self.expiresAt = expiresAt
            self.waitingDays = waitingDays
            self.approvedBy = approvedBy
            self.approvedAt = approvedAt
            self.approverCertificateSerial = approverCertificateSerial
            self.approvalMAC = approvalMAC
            self.approvalMACVersion = approvalMACVersion
            self.completedAt = completedAt
        }
    }

    private static let columns = """
        id, tenant_id::text, requested_by, requested_at, expires_at, waiting_days, approved_by, approved_at,
        approver_certificate_serial, approval_mac, approval_mac_version, completed_at, request_mac, request_mac_version
        """

    public static func insert(_ row: Row, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO tenant_offboardings (id, tenant_id, requested_by, requested_at, expires_at, waiting_days, request_mac, request_mac_version)
            VALUES (\(row.id), \(row.tenant.rawValue)::uuid, \(row.requestedBy), \(row.requestedAt), \(row.expiresAt), \(row.waitingDays),
                \(row.requestMAC.map { Data($0) }), \(row.requestMACVersion))
            """, logger: Database.quiet)
    }

    /// - Parameter forUpdate: lock the row until the transaction ends.
    public static func get(_ id: UUID, forUpdate: Bool, on connection: DatabaseTransaction) async throws -> Row? {
        let query: PostgresQuery = forUpdate
            ? "SELECT \(unescaped: columns) FROM tenant_offboardings WHERE id = \(id) FOR UPDATE"
            : "SELECT \(unescaped: columns) FROM tenant_offboardings WHERE id = \(id)"
        return try await decode(connection.query(query, logger: Database.quiet)).first
    }

    /// Every approved offboarding, carried out or not: the sweep's candidates (a completion mark
    /// carries no MAC) and what rebuilds the HSM's list of key states (the caller believes only
    /// approvals whose MAC verifies).
    public static func approved(on connection: DatabaseTransaction) async throws -> [Row] {
        try await decode(connection.query("""
            SELECT \(unescaped: columns) FROM tenant_offboardings WHERE approved_at IS NOT NULL ORDER BY approved_at
            """, logger: Database.quiet))
    }

    /// Whether two officers approved an offboarding of `tenant` (carried out or not).
    public static func isApproved(_ tenant: TenantID, on connection: DatabaseTransaction) async throws -> Bool {
        try await TemplateStore.scalar("""
            SELECT count(*)::int FROM tenant_offboardings WHERE tenant_id = \(tenant.rawValue)::uuid AND approved_at IS NOT NULL
            """, on: connection) > 0
    }

    public static func approve(
        _ id: UUID, by officer: String, certificateSerial: String, at now: Date, mac: [UInt8], macVersion: Int, on connection: DatabaseTransaction
    ) async throws {
        try await connection.query("""
            UPDATE tenant_offboardings SET approved_by = \(officer), approved_at = \(now), approver_certificate_serial = \(certificateSerial),
                approval_mac = \(Data(mac)), approval_mac_version = \(macVersion)
            WHERE id = \(id)
            """, logger: Database.quiet)
    }

    public static func markCompleted(_ id: UUID, at now: Date, on connection: DatabaseTransaction) async throws {
        try await connection.query("UPDATE tenant_offboardings SET completed_at = \(now) WHERE id = \(id)", logger: Database.quiet)
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [Row] {
        var found = [Row]()
        for try await row in rows.decode((UUID, String, String, Date, Date, Int, String?, Date?, String?, Data?, Int?, Date?, Data?, Int?).self) {
            guard let tenant = TenantID(row.1) else { continue }
            found.append(Row(
                id: row.0, tenant: tenant, requestedBy: row.2, requestedAt: row.3, expiresAt: row.4, waitingDays: row.5,
                approvedBy: row.6, approvedAt: row.7, approverCertificateSerial: row.8, approvalMAC: row.9.map { Array($0) },
                approvalMACVersion: row.10, completedAt: row.11, requestMAC: row.12.map { Array($0) }, requestMACVersion: row.13
            ))
        }
        return found
    }
}

/// Deletes every data row of one tenant (offboarding): fingerprints, verification sessions
/// and their gateway links, attempt counters, API keys, policy and tokenization budget. Kept:
/// the tenant row, key-version metadata (material destroyed first), the audit log, the
/// administration requests and API-key revocations (key ids and times; insert-only for the
/// service role, migration 32) — none holds personal data.
public enum TenantDataStore {
    /// Row counts deleted, by table.
    public typealias Counts = [String: Int]

    /// The tables it empties, children before parents (gateway links name sessions; API keys
    /// name their index row).
    public enum Table: String, Sendable, CaseIterable {
        case gatewayLinks = "gateway_links"
        case verificationSessions = "verification_sessions"
        case templates
        case verificationAttempts = "verification_attempts"
        case apiKeys = "api_keys"
        case apiKeyIndex = "api_key_index"
        case tenantPolicies = "tenant_policies"
        case tokenizationBudgets = "tokenization_budgets"
        case pendingRotations = "pending_rotations"
    }

    /// Deletes at most `limit` of the tenant's rows from `table` (a batch: a large tenant's rows
    /// in one statement outlived the statement timeout). Runs in a transaction scoped to `tenant`
    /// (``Database/withTenant(_:context:timeout:_:)``). - Returns: rows deleted.
    public static func delete(_ tenant: TenantID, from table: Table, limit: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("""
            WITH batch AS (SELECT ctid FROM \(unescaped: table.rawValue) WHERE tenant_id = \(tenant.rawValue)::uuid LIMIT \(limit))
            DELETE FROM \(unescaped: table.rawValue) WHERE tenant_id = \(tenant.rawValue)::uuid AND ctid IN (SELECT ctid FROM batch)
            RETURNING 1
            """, logger: Database.quiet).collect().count
    }

    /// Runs in a transaction scoped to `tenant` (``Database/withTenant(_:context:timeout:_:)``).
    /// Idempotent: a second run deletes nothing. For what batches have left (see
    /// ``delete(_:from:limit:on:)``).
    public static func deleteAll(_ tenant: TenantID, on connection: DatabaseTransaction) async throws -> Counts {
        var counts = Counts()
        for table in Table.allCases {
            var deleted = 0
            for try await _ in try await connection.query(
                "DELETE FROM \(unescaped: table.rawValue) WHERE tenant_id = \(tenant.rawValue)::uuid RETURNING 1", logger: Database.quiet
            ) { deleted += 1 }
            counts[table.rawValue] = deleted
        }
        return counts
    }
}

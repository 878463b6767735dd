public import CustosModel
public import Foundation
import PostgresNIO

/// A tenant as stored: no secret, no personal data (the label is a company handle).
public struct TenantRecord: Sendable, Hashable, Codable {
    public let id: TenantID
    public let label: String
    public let status: String
    public let createdAt: Date
}

/// Tenants are administration data shared by all tenants' requests: no row-level security,
/// nothing secret in them.
public struct TenantStore: Sendable {
    let database: Database

    public init(_ database: Database) { self.database = database }

    /// - Throws: ``StorageError/conflict(_:)`` when the id or label exists.
    public func insert(id: TenantID, label: String) async throws -> TenantRecord {
        try await database.withTransaction(context: "create tenant") { connection in
            try await Self.insert(id: id, label: label, on: connection)
        }
    }

    /// Inserts inside the caller's transaction (tenant creation also creates its keys).
    public static func insert(id: TenantID, label: String, on connection: DatabaseTransaction) async throws -> TenantRecord {
        let rows = try await connection.query("""
            INSERT INTO tenants (id, label, status) VALUES (\(id.rawValue)::uuid, \(label), 'active')
            RETURNING id::text, label, status, created_at
            """, logger: Database.quiet)
        for try await row in rows.decode((String, String, String, Date).self) {
            return TenantRecord(id: TenantID(row.0)!, label: row.1, status: row.2, createdAt: row.3)
        }
        throw StorageError.notFound("tenant after insert")
    }

    /// Sets the tenant's status to `active` or `disabled` inside the caller's transaction.
    /// - Returns: whether a tenant with that id exists (and so was changed).
    public static func setActive(_ id: TenantID, _ active: Bool, on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query(
            "UPDATE tenants SET status = \(active ? "active" : "disabled") WHERE id = \(id.rawValue)::uuid RETURNING id::text",
            logger: Database.quiet
        )
        var changed = false
        for try await _ in rows { changed = true }
        return changed
    }

    /// Tenants whose status is not `active`, on the caller's transaction.
    public static func inactive(on connection: DatabaseTransaction) async throws -> [TenantID] {
        var found = [TenantID]()
        for try await id in try await connection.query("SELECT id::text FROM tenants WHERE status <> 'active'", logger: Database.quiet).decode(String.self) {
            if let tenant = TenantID(id) { found.append(tenant) }
        }
        return found
    }

    public func get(_ id: TenantID) async throws -> TenantRecord? {
        try await database.withTransaction(context: "get tenant") { connection in
            let rows = try await connection.query(
                "SELECT id::text, label, status, created_at FROM tenants WHERE id = \(id.rawValue)::uuid", logger: Database.quiet
            )
            for try await row in rows.decode((String, String, String, Date).self) {
                return TenantRecord(id: TenantID(row.0)!, label: row.1, status: row.2, createdAt: row.3)
            }
            return nil
        }
    }

    public func list() async throws -> [TenantRecord] {
        try await database.withTransaction(context: "list tenants") { connection in
            var records = [TenantRecord]()
            let rows = try await connection.query("SELECT id::text, label, status, created_at FROM tenants ORDER BY created_at, id", logger: Database.quiet)
            for try await row in rows.decode((String, String, String, Date).self) {
                records.append(TenantRecord(id: TenantID(row.0)!, label: row.1, status: row.2, createdAt: row.3))
            }
            return records
        }
    }
}

public import CustosModel
public import Foundation
import PostgresNIO

/// What a tenant's newest audit entries of one action say, once their MACs are checked.
public enum NewestAuditEntry: Sendable, Equatable {
    /// The tenant has no such entry.
    case none
    /// The details of the newest one whose MAC checks.
    case authentic(details: [String: String])
    /// Among the newest few, none is authentic (the database's writer's).
    case forged
}

/// One audit entry as stored. `details` is JSON text that never holds a secret, a name, an
/// email or a subject reference.
public struct AuditEntryRecord: Sendable, Hashable {
    public let seq: Int64
    public let at: Date
    public let tenant: TenantID?
    public let actor: String
    public let action: String
    public let target: String
    public let details: String
    public let previousHash: [UInt8]
    public let entryHash: [UInt8]
    public let mac: [UInt8]
    public let macKeyVersion: Int

    public init(
        seq: Int64, at: Date, tenant: TenantID?, actor: String, action: String, target: String, details: String,
        previousHash: [UInt8], entryHash: [UInt8], mac: [UInt8], macKeyVersion: Int
    ) {
        self.seq = seq
        self.at = at
        self.tenant = tenant
        self.actor = actor
        self.action = action
        self.target = target
        self.details = details
        self.previousHash = previousHash
        self.entryHash = entryHash
        self.mac = mac
        self.macKeyVersion = macKeyVersion
    }
}

/// `audit_log`: append-only for the service role (INSERT and SELECT only).
public enum AuditLogStore {
    /// Serialises appends across connections and instances until the transaction ends.
    public static func lockForAppend(on connection: DatabaseTransaction) async throws {
        // One chain per schema, so one lock per schema: deployments (and test suites) sharing a
        // database do not wait on each other's appends.
        try await connection.run("SELECT pg_advisory_xact_lock(hashtext('custos-audit-append:' || current_schema()))")
    }

    /// The newest entry's sequence number and hash.
    /// The newest entry with its MAC, for an append to check before chaining onto it.
    public static func headForAppend(on connection: DatabaseTransaction) async throws -> (seq: Int64, hash: [UInt8], mac: [UInt8], macKeyVersion: Int)? {
        let rows = try await connection.query(
            "SELECT seq, entry_hash, mac, mac_key_version::int8 FROM audit_log ORDER BY seq DESC LIMIT 1", logger: Database.quiet
        )
        for try await (seq, hash, mac, version) in rows.decode((Int64, Data, Data, Int).self) { return (seq, Array(hash), Array(mac), version) }
        return nil
    }

    public static func head(on connection: DatabaseTransaction) async throws -> (seq: Int64, hash: [UInt8])? {
        let rows = try await connection.query("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1", logger: Database.quiet)
        for try await (seq, hash) in rows.decode((Int64, Data).self) { return (seq, Array(hash)) }
        return nil
    }

    public static func insert(_ entry: AuditEntryRecord, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO audit_log (seq, at, tenant_id, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version)
            VALUES (\(entry.seq), \(entry.at), \(entry.tenant?.rawValue)::uuid, \(entry.actor), \(entry.action), \(entry.target),
                \(entry.details), \(Data(entry.previousHash)), \(Data(entry.entryHash)), \(Data(entry.mac)), \(entry.macKeyVersion))
            """, logger: Database.quiet)
    }

    /// Entries with `seq > after`, in order, at most `limit`.
    /// Whether `tenant` has an entry of `action` on `target` (e.g. `key.rotate` on `pii/v3`: a
    /// version number becomes active at most once).
    public static func contains(tenant: TenantID, action: String, target: String, on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query("""
            SELECT 1 FROM audit_log WHERE tenant_id = \(tenant.rawValue)::uuid AND action = \(action) AND target = \(target) LIMIT 1
            """, logger: Database.quiet)
        for try await _ in rows { return true }
        return false
    }

    public static func entries(after: Int64, limit: Int, on connection: DatabaseTransaction) async throws -> [AuditEntryRecord] {
        try await decode(try await connection.query("""
            SELECT seq, at, tenant_id::text, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version
            FROM audit_log WHERE seq > \(after) ORDER BY seq LIMIT \(limit)
            """, logger: Database.quiet))
    }

    /// Entries with `seq > after` and `at >= since`, in sequence order, at most `limit` (the
    /// export). Times follow sequence numbers only roughly (an entry's time is taken before the
    /// append lock), so `since` filters each entry rather than choosing a starting point.
    public static func entries(after: Int64, since: Date, limit: Int, on connection: DatabaseTransaction) async throws -> [AuditEntryRecord] {
        try await decode(try await connection.query("""
            SELECT seq, at, tenant_id::text, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version
            FROM audit_log WHERE seq > \(after) AND at >= \(since) ORDER BY seq LIMIT \(limit)
            """, logger: Database.quiet))
    }

    /// The oldest `limit` entries of `action`, whatever their tenant.
    public static func entries(action: String, limit: Int, on connection: DatabaseTransaction) async throws -> [AuditEntryRecord] {
        try await decode(try await connection.query("""
            SELECT seq, at, tenant_id::text, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version
            FROM audit_log WHERE action = \(action) ORDER BY seq LIMIT \(limit)
            """, logger: Database.quiet))
    }

    /// `tenant`'s newest `limit` entries of `action`, newest first.
    public static func newestEntries(
        action: String, tenant: TenantID, limit: Int, on connection: DatabaseTransaction
    ) async throws -> [AuditEntryRecord] {
        try await decode(try await connection.query("""
            SELECT seq, at, tenant_id::text, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version
            FROM audit_log WHERE action = \(action) AND tenant_id = \(tenant.rawValue)::uuid ORDER BY seq DESC LIMIT \(limit)
            """, logger: Database.quiet))
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [AuditEntryRecord] {
        var entries = [AuditEntryRecord]()
        for try await row in rows {
            let (seq, at, tenant, actor, action, target, details, previous, hash, mac, macVersion) =
                try row.decode((Int64, Date, String?, String, String, String, String, Data, Data, Data, Int).self)
            entries.append(AuditEntryRecord(
                seq: seq, at: at, tenant: tenant.flatMap(TenantID.init), actor: actor, action: action, target: target,
                details: details, previousHash: Array(previous), entryHash: Array(hash), mac: Array(mac), macKeyVersion: macVersion
            ))
        }
        return entries
    }
}

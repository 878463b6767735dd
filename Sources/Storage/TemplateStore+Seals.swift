import Foundation
import PostgresNIO

// Template MACs (migration 33): rows written before it carry none until an officer seals
// them (`custos db seal-records`), and a subject's move to another pii reference changes
// what its MAC covers. Functions run inside ``Database/withTenant(_:context:_:)``.
extension TemplateStore {
    /// Whether the tenant in scope has a template without a MAC (the partial index answers).
    public static func hasUnsealed(on connection: DatabaseTransaction) async throws -> Bool {
        try await scalar("SELECT count(*)::int FROM (SELECT 1 FROM templates WHERE record_mac IS NULL LIMIT 1) AS unsealed", on: connection) > 0
    }

    /// At most `limit` templates of the tenant in scope without a MAC.
    public static func unsealed(limit: Int, on connection: DatabaseTransaction) async throws -> [(subject: String, template: StoredTemplate)] {
        var found = [(subject: String, template: StoredTemplate)]()
        let rows = try await connection.query("""
            SELECT subject_ref, key_version, token FROM templates WHERE record_mac IS NULL ORDER BY subject_ref, key_version LIMIT \(limit)
            """, logger: Database.quiet)
        for try await (subject, version, bytes) in rows.decode((String, Int, Data).self) {
            found.append((subject, StoredTemplate(keyVersion: version, bytes: Array(bytes))))
        }
        return found
    }

    /// Stores `seal` on the subject's template of `template`'s version if the row still holds
    /// exactly `template`'s token and still has no MAC (a row rewritten meanwhile carries its
    /// writer's MAC). - Returns: whether the row was sealed here.
    public static func sealUnsealed(
        subject: String, template: StoredTemplate, seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> Bool {
        try await !connection.query("""
            UPDATE templates SET record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE subject_ref = \(subject) AND key_version = \(template.keyVersion) AND token = \(Data(template.bytes))
                AND record_mac IS NULL
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Replaces the MAC of the subject's template of `template`'s version (it moved to this
    /// subject reference) if the row still holds `template`'s token and MAC.
    /// - Returns: whether the row was changed.
    @discardableResult
    public static func replaceSeal(
        subject: String, template: StoredTemplate, with seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> Bool {
        guard let old = template.seal else { return false }
        return try await !connection.query("""
            UPDATE templates SET record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE subject_ref = \(subject) AND key_version = \(template.keyVersion) AND token = \(Data(template.bytes))
                AND record_mac = \(Data(old.mac)) AND record_mac_version = \(old.macVersion)
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }
}

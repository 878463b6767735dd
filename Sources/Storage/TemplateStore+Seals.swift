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

    /// A template the sealing read, with its row version (`xmin`): sealed only if unchanged since.
    public struct Unsealed: Sendable {
        public let subject: String
        public let template: StoredTemplate
        public let rowVersion: String
    }

    /// At most `limit` templates of the tenant in scope without a MAC, in (subject, version)
    /// order after `after`.
    public static func unsealed(
        after: (subject: String, keyVersion: Int)?, limit: Int, on connection: DatabaseTransaction
    ) async throws -> [Unsealed] {
        var found = [Unsealed]()
        let (subject, version) = after ?? ("", 0)
        let rows = try await connection.query("""
            SELECT subject_ref, key_version, token, xmin::text FROM templates
            WHERE record_mac IS NULL AND (subject_ref, key_version) > (\(subject), \(version))
            ORDER BY subject_ref, key_version LIMIT \(limit)
            """, logger: Database.quiet)
        for try await (subject, version, bytes, rowVersion) in rows.decode((String, Int, Data, String).self) {
            found.append(Unsealed(subject: subject, template: StoredTemplate(keyVersion: version, bytes: Array(bytes)), rowVersion: rowVersion))
        }
        return found
    }

    /// Stores `seal` on the template if its row is the version the sealing read (a row
    /// rewritten since carries its writer's MAC). - Returns: whether it was sealed here.
    public static func sealUnsealed(_ unsealed: Unsealed, seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            UPDATE templates SET record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE subject_ref = \(unsealed.subject) AND key_version = \(unsealed.template.keyVersion)
                AND xmin::text = \(unsealed.rowVersion) AND record_mac IS NULL
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Deletes the template if its row is the version the sealing read and `seal` is a
    /// withdrawn MAC (migration 34): the row was put back without its MAC after Custos deleted
    /// or replaced it, and sealing it would make the copy genuine. - Returns: whether it was
    /// deleted here.
    public static func deleteIfWithdrawn(_ unsealed: Unsealed, seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            DELETE FROM templates
            WHERE subject_ref = \(unsealed.subject) AND key_version = \(unsealed.template.keyVersion)
                AND xmin::text = \(unsealed.rowVersion) AND record_mac IS NULL AND template_mac_withdrawn(\(Data(seal.mac)))
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Replaces the MAC of the subject's template of `template`'s version (it moved to this
    /// subject reference) if the row still holds `template`'s MAC (which covers its token).
    /// - Returns: whether the row was changed.
    @discardableResult
    public static func replaceSeal(
        subject: String, template: StoredTemplate, with seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> Bool {
        guard let old = template.seal else { return false }
        return try await !connection.query("""
            UPDATE templates SET record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE subject_ref = \(subject) AND key_version = \(template.keyVersion)
                AND record_mac = \(Data(old.mac)) AND record_mac_version = \(old.macVersion)
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }
}

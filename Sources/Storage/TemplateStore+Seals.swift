public import CustosModel
import Foundation
import PostgresNIO

// Template MACs (migration 33): rows written before it carry none until an officer seals
// them (`custos db seal-records`), and a subject's move to another pii reference changes
// what its MAC covers; a MAC a row loses is withdrawn (migration 34). Functions run inside
// ``Database/withTenant(_:context:timeout:_:)``.
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

    /// Deletes the template if its row is the version the sealing read and was withdrawn
    /// (migration 34) — `seal` is a listed MAC, or its content was listed when it was removed
    /// without one: the row was put back without its MAC after Custos deleted or replaced it, and
    /// sealing it would make the copy genuine. - Returns: whether it was deleted here.
    public static func deleteIfWithdrawn(_ unsealed: Unsealed, seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            DELETE FROM templates
            WHERE subject_ref = \(unsealed.subject) AND key_version = \(unsealed.template.keyVersion)
                AND xmin::text = \(unsealed.rowVersion) AND record_mac IS NULL
                AND template_withdrawn(\(Data(seal.mac)), tenant_id, subject_ref, key_version, token)
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Moves the subject's template of `template`'s version from reference `from` to `to` with
    /// `seal` (its MAC under the new reference; `nil` for a template that has none), if the row
    /// still holds `template`'s MAC. One statement: a row never keeps its MAC across a change of
    /// what the MAC covers, which would withdraw the MAC it keeps (migration 34).
    /// - Returns: whether the row was moved.
    @discardableResult
    public static func move(
        _ template: StoredTemplate, from: String, to: SubjectReference, seal: RecordSeal?, on connection: DatabaseTransaction
    ) async throws -> Bool {
        try await !connection.query("""
            UPDATE templates SET subject_ref = \(to.value), pii_version = \(to.piiVersion),
                record_mac = \(seal.map { Data($0.mac) }), record_mac_version = \(seal?.macVersion)
            WHERE subject_ref = \(from) AND key_version = \(template.keyVersion)
                AND record_mac IS NOT DISTINCT FROM \(template.seal.map { Data($0.mac) })
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }
}

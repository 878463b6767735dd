import Foundation
import PostgresNIO

extension TemplateStore {
    /// Deletes the subject's templates of every biometric version but `keyVersion`: a
    /// replacing enrolment replaces the face under every version, so templates of older
    /// versions (another face, or the same one under a key being retired) no longer count.
    /// - Returns: rows deleted.
    @discardableResult
    public static func deleteOtherVersions(subject: String, keeping keyVersion: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("""
            DELETE FROM templates WHERE subject_ref = \(subject) AND key_version <> \(keyVersion) RETURNING 1
            """, logger: Database.quiet).collect().count
    }
}

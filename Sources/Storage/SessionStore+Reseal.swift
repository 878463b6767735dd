import CustosModel
public import Foundation
import PostgresNIO

// Re-sealing (`custos key reseal --purpose data`): the sealed fields of sessions still under an
// older `data` version, read locked and written back under the active one, a batch per
// transaction.
extension SessionStore {
    /// A session's sealed fields and the `data` version that sealed them.
    public struct SealedFields: Sendable, Hashable {
        public let id: UUID
        public let sealedName: [UInt8]?
        public let sealedEmail: [UInt8]?
        public let dataKeyVersion: Int
    }

    /// Locks (until the caller's transaction ends) up to `limit` sessions whose sealed fields
    /// are under a version older than `target`, in id order. A row another transaction holds is
    /// waited for and then re-checked, so two runs never re-seal one row twice. Newer versions
    /// are left alone: after a rotation during a run, its rows are not moved back.
    public static func lockSealed(olderThan target: Int, limit: Int, on connection: DatabaseTransaction) async throws -> [SealedFields] {
        let rows = try await connection.query("""
            SELECT id, sealed_name, sealed_email, data_key_version FROM verification_sessions
            WHERE data_key_version < \(target)
            ORDER BY id LIMIT \(limit) FOR UPDATE
            """, logger: Database.quiet)
        var result = [SealedFields]()
        for try await (id, name, email, version) in rows.decode((UUID, Data?, Data?, Int).self) {
            result.append(SealedFields(id: id, sealedName: name.map { Array($0) }, sealedEmail: email.map { Array($0) }, dataKeyVersion: version))
        }
        return result
    }

    /// Replaces a session's sealed fields with their re-sealed form, only if they are still
    /// under `old`. - Returns: whether the row was written.
    public static func replaceSealed(
        _ id: UUID, name: [UInt8]?, email: [UInt8]?, from old: Int, to new: Int, on connection: DatabaseTransaction
    ) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE verification_sessions SET sealed_name = \(name.map { Data($0) }), sealed_email = \(email.map { Data($0) }), data_key_version = \(new)
            WHERE id = \(id) AND data_key_version = \(old) RETURNING 1
            """, logger: Database.quiet)
        return try await rows.collect().count == 1
    }

    /// Sessions with sealed fields under a version older than `target`.
    public static func countSealed(olderThan target: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await TemplateStore.scalar("""
            SELECT count(*)::int FROM verification_sessions WHERE data_key_version < \(target)
            """, on: connection)
    }
}

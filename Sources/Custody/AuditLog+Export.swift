public import Foundation
public import Storage

extension AuditLog {
    /// Entries with sequence number above `after` (and time at or after `since`, when given), in
    /// sequence order, at most `limit`: one page of an export. Sequence numbers become visible
    /// in order and without gaps (appends are serialised until their commit, and a rolled-back
    /// append frees its number for the next), so the last sequence returned is a cursor that
    /// misses nothing.
    /// - Throws: ``CustodyError``.
    public func export(after: Int64, since: Date?, limit: Int) async throws -> [AuditEntryRecord] {
        try await custody {
            try await database.withTransaction(context: "export audit entries") { connection in
                if let since {
                    try await AuditLogStore.entries(after: after, since: since, limit: limit, on: connection)
                } else {
                    try await AuditLogStore.entries(after: after, limit: limit, on: connection)
                }
            }
        }
    }
}

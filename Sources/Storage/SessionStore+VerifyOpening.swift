public import CustosModel
public import Foundation
import PostgresNIO

/// Verify's opening reads and its attempt count as one statement: the session locked, one
/// attempt counted against its subject, and the subject's templates — what were three round
/// trips (lock, count, template read) inside the call's one transaction. The profile of issue 12
/// found PostgreSQL's and the service's time per Verify in per-statement overhead (a round
/// trip, a wake-up on each side, executor set-up), not in execution.
extension SessionStore {
    /// What Verify reads before it tokenizes the probe.
    public struct VerifyOpening: Sendable {
        public let row: Row
        /// Attempts in the subject's current window, this one included, and when it started
        /// (as ``VerificationAttemptStore``'s counter keeps them).
        public let attempts: Int
        public let windowStart: Date
        /// The subject's stored templates by key version, as stored: each is read in its
        /// version's format when it is compared (``StoredTemplate/token(format:)``), so one of
        /// another length fails there, as a single read did.
        let templates: [Int: StoredTemplate]

        /// The key versions the subject has templates of.
        public var enrolledVersions: Set<Int> { Set(templates.keys) }

        /// The subject's template of `keyVersion` (with its MAC), if it has one.
        public func template(keyVersion: Int) -> StoredTemplate? { templates[keyVersion] }

        /// Every template read, by version.
        public var storedTemplates: [StoredTemplate] { templates.keys.sorted().compactMap { templates[$0] } }

        /// Rows of ``SessionStore/columns``, then attempts, window start, key version, token and
        /// the token's MAC and MAC key version (one row per template; NULL template columns when
        /// there is none). `nil`: no rows.
        static func decode<Rows: AsyncSequence>(_ rows: Rows) async throws -> VerifyOpening? where Rows.Element == PostgresRow {
            var opening: (row: Row, attempts: Int, windowStart: Date)?
            var templates = [Int: StoredTemplate]()
            let first = SessionStore.columnCount
            for try await row in rows {
                let cells = row.makeRandomAccess()
                if opening == nil {
                    opening = (try SessionStore.decode(row), try cells[first].decode(Int.self), try cells[first + 1].decode(Date.self))
                }
                if let version = try cells[first + 2].decode(Int?.self), let bytes = try cells[first + 3].decode(Data?.self) {
                    let seal = RecordSeal(mac: try cells[first + 4].decode(Data?.self), macVersion: try cells[first + 5].decode(Int?.self))
                    templates[version] = StoredTemplate(keyVersion: version, bytes: Array(bytes), seal: seal)
                }
            }
            guard let opening else { return nil }
            return VerifyOpening(row: opening.row, attempts: opening.attempts, windowStart: opening.windowStart, templates: templates)
        }
    }

    /// Locks session `id`, counts one verification attempt against its subject (a window that
    /// started at or before `cutoff` starts afresh at `now`) and reads the subject's templates.
    /// The attempt row stays locked until the transaction ends, so concurrent attempts for one
    /// subject count one after the other; a caller that refuses afterwards (session not ready,
    /// too many attempts) rolls the count back with its transaction.
    ///
    /// The templates are read in the statement's snapshot, taken before it waited for either
    /// lock: a concurrent Verify of the same subject that migrated it during a biometric overlap
    /// and committed meanwhile is not seen, and this one compares under the older version (a
    /// GREEN there migrates again: the active version's template is replaced by this probe).
    /// A subject moved to another pii reference meanwhile shows no templates in that snapshot:
    /// they are then read again in a new one (`PIIMoveConcurrencyTests`).
    /// - Returns: `nil` when there is no such session in the tenant's scope (nothing counted).
    public static func openForVerify(
        _ id: UUID, tenant: TenantID, now: Date, cutoff: Date, on connection: DatabaseTransaction
    ) async throws -> VerifyOpening? {
        guard let opened = try await VerifyOpening.decode(try await connection.execute(OpenForVerify(id: id, tenant: tenant, now: now, cutoff: cutoff))) else {
            return nil
        }
        var templates = opened.templates
        if templates.isEmpty {
            // The templates were read in the snapshot taken before the session lock was granted;
            // the session row is the one locked, as the writer that held it left it. A session
            // creation that moved the subject to the active pii version meanwhile changed both
            // the session's reference and its templates': joined on the new reference, the old
            // snapshot shows none. Read them again in a new snapshot, which sees that commit
            // (only when none were found: an enrolled subject's Verify keeps its one round trip).
            let query: PostgresQuery = """
                SELECT key_version::int8, token, record_mac, record_mac_version::int8 FROM templates WHERE subject_ref = \(opened.row.subject.value)
                """
            for try await (version, bytes, mac, macVersion) in try await connection.query(query, logger: Database.quiet).decode((Int, Data, Data?, Int?).self) {
                templates[version] = StoredTemplate(keyVersion: version, bytes: Array(bytes), seal: RecordSeal(mac: mac, macVersion: macVersion))
            }
        }
        return VerifyOpening(row: opened.row, attempts: opened.attempts, windowStart: opened.windowStart, templates: templates)
    }

    /// One row per template of the subject (one with NULL template columns when it has none).
    /// The templates are a lateral subquery (`OFFSET 0`: not flattened) so that the subject
    /// reference reaches the primary key as a parameter: as a plain join, the planner folded the
    /// tenant scope into a one-time filter and scanned all of a young tenant's templates (its
    /// statistics put it at one row) for every Verify during an overlap (9 ms of PostgreSQL each).
    struct OpenForVerify: PreparedStatement {
        static let name = "custos_open_sealed_for_verify"
        static let bindingDataTypes: [PostgresDataType] = [.uuid, .text, .timestamptz, .timestamptz]
        static let sql = """
            WITH locked AS (
                SELECT \(columns) FROM verification_sessions WHERE id = $1 FOR UPDATE
            ), counted AS (
                INSERT INTO verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
                SELECT $2::uuid, locked.subject_ref, $3, 1 FROM locked
                ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET
                    attempts = CASE WHEN a.window_start <= $4 THEN 1 ELSE a.attempts + 1 END,
                    window_start = CASE WHEN a.window_start <= $4 THEN EXCLUDED.window_start ELSE a.window_start END
                RETURNING attempts, window_start
            )
            SELECT locked.*, counted.attempts::int8, counted.window_start, t.key_version::int8, t.token, t.record_mac, t.record_mac_version::int8
            FROM locked CROSS JOIN counted
            LEFT JOIN LATERAL (
                SELECT key_version, token, record_mac, record_mac_version FROM templates
                WHERE tenant_id = $2::uuid AND subject_ref = locked.subject_ref OFFSET 0
            ) t ON true
            """
        let id: UUID
        let tenant: TenantID
        let now: Date
        let cutoff: Date

        func makeBindings() -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 4)
            bindings.append(id)
            bindings.append(tenant.rawValue)
            bindings.append(now)
            bindings.append(cutoff)
            return bindings
        }
    }
}

public import CustosModel
public import Foundation
import PostgresNIO

/// `templates`: enrolled biometric tokens (never features), tenant-scoped by row-level
/// security. Functions run inside ``Database/withTenant(_:context:timeout:_:)``.
public enum TemplateStore {
    /// Gallery changes are announced here (payload: ``GalleryChange``). Erasures, resets and
    /// reference migrations announce inside the writing transaction (rare; a row that is gone
    /// leaves nothing to poll for). Enrolments do not: a NOTIFY makes its transaction take
    /// PostgreSQL's database-wide notify lock through its WAL flush, which serialised every
    /// Enrol's commit (issue 12). A written token records its transaction
    /// (`changed_xid`), other instances find it with ``changes(since:keyVersions:on:)``, and
    /// the writer tells them when to look after the commit, coalesced
    /// (``GalleryChange/Kind/changed``).
    public static let galleryChannel = "custos_gallery"

    /// What an export shows of a template: never the token itself.
    public struct Metadata: Sendable, Hashable, Codable {
        public let subject: String
        public let keyVersion: Int
        public let piiVersion: Int
        public let enrolledAt: Date
        public let lastUsedAt: Date
    }

    /// Stores (or replaces) the subject's token of its key version, with its MAC.
    public static func upsert(
        subject: SubjectReference, token: BiometricToken, seal: RecordSeal, tenant: TenantID, on connection: DatabaseTransaction
    ) async throws {
        try await connection.query("""
            INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
            VALUES (\(tenant.rawValue)::uuid, \(subject.value), \(subject.piiVersion), \(token.keyVersion), \(Data(token.bytes)),
                \(Data(seal.mac)), \(seal.macVersion))
            ON CONFLICT (tenant_id, subject_ref, key_version)
            DO UPDATE SET token = EXCLUDED.token, record_mac = EXCLUDED.record_mac, record_mac_version = EXCLUDED.record_mac_version,
                enrolled_at = now(), last_used_at = now(), changed_xid = pg_current_xact_id()
            """, logger: Database.quiet)
    }

    /// Where a poll of ``changes(since:keyVersions:on:)`` may start so that it finds every
    /// template written by a transaction the caller's later reads in this transaction cannot
    /// see: the xmin of the current snapshot. Every transaction a snapshot does not see has an
    /// id at or above its xmin (those below had ended when it was taken); ids are handed out
    /// at a transaction's first write, not at its commit, so a row's id says nothing of when it
    /// committed — which is why this is not "the largest id read". Read it before the rows it
    /// guards (a later snapshot's xmin is never smaller).
    public static func changeWatermark(on connection: DatabaseTransaction) async throws -> UInt64 {
        for try await text in try await connection.query(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text", logger: Database.quiet
        ).decode(String.self) {
            guard let watermark = UInt64(text) else { break }
            return watermark
        }
        throw TemplateChangeError.noWatermark
    }

    /// The templates of `keyVersions` written by transactions with an id at or above `watermark`
    /// (from ``changeWatermark(on:)`` before an earlier read): all that the earlier read could
    /// not see, and some it did (applying those again changes nothing).
    public static func changes(
        since watermark: UInt64, keyVersions: [Int], on connection: DatabaseTransaction
    ) async throws -> [(subject: String, template: StoredTemplate)] {
        var found = [(subject: String, template: StoredTemplate)]()
        let rows = try await connection.query("""
            SELECT subject_ref, key_version, token FROM templates
            WHERE changed_xid >= \(String(watermark))::xid8 AND key_version = ANY(\(keyVersions))
            """, logger: Database.quiet)
        for try await (subject, version, bytes) in rows.decode((String, Int, Data).self) {
            found.append((subject, StoredTemplate(keyVersion: version, bytes: Array(bytes))))
        }
        return found
    }

    /// The subject's template of `keyVersion`, as stored: read it in that version's format
    /// (``StoredTemplate/token(format:)``).
    public static func get(subject: String, keyVersion: Int, on connection: DatabaseTransaction) async throws -> StoredTemplate? {
        for try await row in try await connection.execute(ReadTemplate(subject: subject, keyVersion: keyVersion)) {
            let (bytes, mac, macVersion) = try row.decode((Data, Data?, Int?).self)
            return StoredTemplate(keyVersion: keyVersion, bytes: Array(bytes), seal: RecordSeal(mac: mac, macVersion: macVersion))
        }
        return nil
    }

    /// Verify's template read, prepared (``PreparedStatement``).
    struct ReadTemplate: PreparedStatement {
        static let name = "custos_read_sealed_template"
        static let bindingDataTypes: [PostgresDataType] = [.text, .int8]
        static let sql = "SELECT token, record_mac, record_mac_version FROM templates WHERE subject_ref = $1 AND key_version = $2"
        let subject: String
        let keyVersion: Int

        func makeBindings() -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 2)
            bindings.append(subject)
            bindings.append(keyVersion)
            return bindings
        }
    }

    /// The tokens of one key version of the tenant in scope (to load the 1:N gallery): the
    /// `limit` most recently used, least recent first (so a gallery's LRU order follows), handed
    /// to `each` as they arrive — a million tokens are never held in a list besides the gallery.
    public static func all(
        keyVersion: Int, limit: Int = .max, on connection: DatabaseTransaction, _ each: (String, StoredTemplate) throws -> Void
    ) async throws {
        let rows = try await connection.query("""
            SELECT subject_ref, token FROM (
                SELECT subject_ref, token, last_used_at FROM templates WHERE key_version = \(keyVersion)
                ORDER BY last_used_at DESC, subject_ref LIMIT \(Int64(clamping: limit))
            ) AS recent ORDER BY last_used_at, subject_ref DESC
            """, logger: Database.quiet)
        for try await (subject, bytes) in rows.decode((String, Data).self) {
            try each(subject, StoredTemplate(keyVersion: keyVersion, bytes: Array(bytes)))
        }
    }

    /// The number of templates of one key version of the tenant in scope, at most `limit`.
    public static func count(keyVersion: Int, limit: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await scalar("""
            SELECT count(*)::int FROM (SELECT 1 FROM templates WHERE key_version = \(keyVersion) LIMIT \(Int64(clamping: limit))) AS held
            """, on: connection)
    }

    /// The tokens of `subjects` of one key version (identification re-scores its in-memory
    /// candidates with them; a subject erased meanwhile is simply absent).
    public static func tokens(subjects: [String], keyVersion: Int, on connection: DatabaseTransaction) async throws -> [String: StoredTemplate] {
        guard !subjects.isEmpty else { return [:] }
        var found = [String: StoredTemplate]()
        let rows = try await connection.query("""
            SELECT subject_ref, token, record_mac, record_mac_version FROM templates
            WHERE subject_ref = ANY(\(subjects)) AND key_version = \(keyVersion)
            """, logger: Database.quiet)
        for try await (subject, bytes, mac, macVersion) in rows.decode((String, Data, Data?, Int?).self) {
            found[subject] = StoredTemplate(keyVersion: keyVersion, bytes: Array(bytes), seal: RecordSeal(mac: mac, macVersion: macVersion))
        }
        return found
    }

    /// The key versions the subject has templates of (empty: not enrolled).
    public static func keyVersions(subject: String, on connection: DatabaseTransaction) async throws -> [Int] {
        var versions = [Int]()
        let rows = try await connection.query("""
            SELECT key_version FROM templates WHERE subject_ref = \(subject) ORDER BY key_version
            """, logger: Database.quiet)
        for try await version in rows.decode(Int.self) { versions.append(version) }
        return versions
    }

    public static func touch(subject: String, on connection: DatabaseTransaction) async throws {
        try await connection.query("UPDATE templates SET last_used_at = now() WHERE subject_ref = \(subject)", logger: Database.quiet)
    }

    public static func metadata(subjects: [String], on connection: DatabaseTransaction) async throws -> [Metadata] {
        var result = [Metadata]()
        let rows = try await connection.query("""
            SELECT subject_ref, key_version, pii_version, enrolled_at, last_used_at FROM templates
            WHERE subject_ref = ANY(\(subjects)) ORDER BY enrolled_at, key_version
            """, logger: Database.quiet)
        for try await row in rows.decode((String, Int, Int, Date, Date).self) {
            result.append(Metadata(subject: row.0, keyVersion: row.1, piiVersion: row.2, enrolledAt: row.3, lastUsedAt: row.4))
        }
        return result
    }

    /// Deletes every template of the subjects (erasure). - Returns: rows deleted.
    @discardableResult
    public static func delete(subjects: [String], on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("DELETE FROM templates WHERE subject_ref = ANY(\(subjects)) RETURNING 1", logger: Database.quiet).collect().count
    }

    /// Deletes the subject's template of one key version (a migration to the active version
    /// replaced it). - Returns: whether a row was deleted.
    @discardableResult
    public static func delete(subject: String, keyVersion: Int, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            DELETE FROM templates WHERE subject_ref = \(subject) AND key_version = \(keyVersion) RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Deletes every template of one key version of the tenant in scope (the end of a biometric
    /// rotation's overlap), each MAC withdrawn (migration 34). A million templates take about ten
    /// seconds (docs/benchmarks.md, "Session 23"): the delete may run for `transactionTimeout`
    /// less 20 s, beyond the statement timeout, in a transaction allowed `transactionTimeout`
    /// (``Database/withTenant(_:context:timeout:_:)``). The margin covers what the transaction
    /// does before (a lock wait is bounded by the statement timeout, 8 s) and after it: the
    /// database normally cancels a delete that runs too long before the transaction's own
    /// deadline can, so the caller learns of a rollback rather than of a deadline passed while
    /// the delete might still commit (helper-89). The statement timeout is restored after it.
    /// - Returns: rows deleted.
    public static func deleteAll(keyVersion: Int, transactionTimeout: Duration, on connection: DatabaseTransaction) async throws -> Int {
        let statementTimeout = max(transactionTimeout - .seconds(20), .seconds(1))
        try await connection.run("SELECT set_config('statement_timeout', \(String(statementTimeout.components.seconds * 1000)), true)")
        let deleted = try await scalar("""
            WITH gone AS (DELETE FROM templates WHERE key_version = \(keyVersion) RETURNING 1) SELECT count(*)::int FROM gone
            """, on: connection)
        try await connection.run("SET LOCAL statement_timeout TO DEFAULT")
        return deleted
    }

    /// Retention: deletes at most `limit` templates with no activity since `cutoff` (a batch: a
    /// tenant's whole backlog in one statement outlived the statement timeout). The condition is
    /// repeated in the DELETE on purpose: PostgreSQL does not re-check a `ctid` match on a row
    /// updated meanwhile, so it is what leaves a template used since. - Returns: rows deleted.
    public static func deleteInactive(since cutoff: Date, limit: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("""
            WITH idle AS (SELECT ctid FROM templates WHERE last_used_at < \(cutoff) LIMIT \(limit))
            DELETE FROM templates WHERE last_used_at < \(cutoff) AND ctid IN (SELECT ctid FROM idle)
            RETURNING 1
            """, logger: Database.quiet).collect().count
    }

    /// Stored tokens made under a biometric key version (they need that key to be compared).
    public static func count(keyVersion: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await scalar("SELECT count(*)::int FROM templates WHERE key_version = \(keyVersion)", on: connection)
    }

    /// Stored subject references made under a `pii` key version.
    public static func count(piiVersion: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await scalar("SELECT count(*)::int FROM templates WHERE pii_version = \(piiVersion)", on: connection)
    }

    /// Announces a change to every instance's gallery, at commit of the caller's transaction.
    public static func notify(_ change: GalleryChange, on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_notify(\(galleryChannel), \(change.payload))")
    }

    /// Announces `changes` at once, at commit of the caller's transaction: for the coalesced
    /// notices sent after enrolments committed, in a transaction of their own.
    public static func notify(_ changes: [GalleryChange], on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_notify(\(galleryChannel), payload) FROM unnest(\(changes.map(\.payload))::text[]) AS payload")
    }

    static func scalar(_ query: PostgresQuery, on connection: DatabaseTransaction) async throws -> Int {
        for try await count in try await connection.query(query, logger: Database.quiet).decode(Int.self) { return count }
        return 0
    }
}

/// A gallery change as it travels through NOTIFY: which instance made it (so it skips its
/// own), which tenant, and what changed. Subject references are pseudonymous HMACs; the
/// payload is never stored.
public struct GalleryChange: Sendable, Hashable {
    public enum Kind: String, Sendable {
        /// The subject's token of `keyVersion` was stored: reload that one row.
        case enrolled = "e"
        /// The subject's templates were erased.
        case erased = "x"
        /// Many rows changed (retention): drop the tenant's galleries.
        case reset = "r"
        /// The subject moved to `keyVersion` (a GREEN match under an older version during a
        /// rotation's overlap): drop it from the tenant's other versions' galleries and reload
        /// that one row. Instances that predate this kind drop the payload; their stale entry
        /// is harmless, since identification re-reads candidates' tokens from the database.
        case migrated = "m"
        /// Templates of the tenant were written (enrolments, migrations to a new version):
        /// poll them (``TemplateStore/changes(since:keyVersions:on:)``). Sent after the commit,
        /// at most once per tenant per ~50 ms, so it names no subject. Instances that predate
        /// this kind drop the payload, and miss these writes until their galleries reload.
        case changed = "c"
    }

    public let instance: String
    public let tenant: TenantID
    public let kind: Kind
    public let keyVersion: Int
    public let subject: String

    public init(instance: String, tenant: TenantID, kind: Kind, keyVersion: Int = 0, subject: String = "") {
        self.instance = instance
        self.tenant = tenant
        self.kind = kind
        self.keyVersion = keyVersion
        self.subject = subject
    }

    var payload: String { [instance, tenant.rawValue, kind.rawValue, String(keyVersion), subject].joined(separator: "|") }

    public init?(payload: String) {
        let parts = payload.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 5, let tenant = TenantID(parts[1]), let kind = Kind(rawValue: parts[2]), let version = Int(parts[3]) else { return nil }
        self.init(instance: parts[0], tenant: tenant, kind: kind, keyVersion: version, subject: parts[4])
    }
}

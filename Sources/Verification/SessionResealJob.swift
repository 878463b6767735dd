public import CustosModel
import Foundation
public import Storage

/// Re-seals the names and emails of verification sessions still under an older `data` key
/// version under the active one (`custos key reseal --purpose data`), so the old version
/// reaches zero references and can be destroyed (DESIGN §5).
///
/// Crash safety: each batch is one transaction — lock the rows, open each field with its old
/// version, seal it with the active one under the same associated data (tenant, session,
/// field), write both fields and the new version together. A crash (or `kill -9`) inside a
/// batch rolls the whole batch back: every row is either entirely under its old version or
/// entirely under the new one, never in between, and nothing is lost. A run again continues
/// with the rows still under older versions; rows already under the active version are never
/// selected, so nothing is sealed twice. Nothing needs reconciling at start-up.
public struct SessionResealJob: Sendable {
    /// Points a test can make a run fail at.
    public enum Step: Sendable, Hashable {
        /// Every row of batch `n` (1-based) is written, the transaction not yet committed.
        case batchWritten(Int)
        /// Batch `n` is committed.
        case batchCommitted(Int)
    }

    /// Where a run stands, after each batch.
    public struct Progress: Sendable, Hashable {
        public let targetVersion: Int
        /// Sessions re-sealed by this run.
        public let resealed: Int
        /// Sessions still under older versions.
        public let remaining: Int
        /// Sessions under older versions when the run started.
        public let total: Int
        public let batches: Int
        public let done: Bool
    }

    public static let defaultBatchSize = 100
    public static let maxBatchSize = 1_000

    let database: Database
    let sealer: any PersonalDataSealing
    let activeVersion: any ActiveDataKeyVersion
    let audit: any AuditRecording
    let hook: (@Sendable (Step) throws -> Void)?

    /// - Parameter hook: called at each ``Step``; a throw aborts the run there (crash tests).
    public init(
        database: Database, sealer: any PersonalDataSealing, activeVersion: any ActiveDataKeyVersion, audit: any AuditRecording,
        hook: (@Sendable (Step) throws -> Void)? = nil
    ) {
        self.database = database
        self.sealer = sealer
        self.activeVersion = activeVersion
        self.audit = audit
        self.hook = hook
    }

    /// Re-seals every sealed field of `tenant` under the active `data` version, `batchSize`
    /// sessions per transaction, calling `progress` after each batch and once at the end
    /// (`done`). Audited once per run with counts — also when the run stops early (the entry
    /// then says `interrupted`); a run killed outright leaves no entry, and the next run's
    /// entry counts what it still had to do.
    /// - Returns: the last progress.
    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` for a batch size outside
    ///   1...``maxBatchSize``; custody's errors for a field under a destroyed version or one
    ///   that does not open (the run stops there; batches before it stay committed).
    @discardableResult
    public func run(
        tenant: TenantID, actor: String, batchSize: Int = SessionResealJob.defaultBatchSize,
        progress: @Sendable (Progress) async throws -> Void = { _ in }
    ) async throws -> Progress {
        guard (1...Self.maxBatchSize).contains(batchSize) else {
            throw VerificationError.invalidArgument(field: "batch_size", reason: "1 to \(Self.maxBatchSize)")
        }
        let target = try await activeVersion.activeDataKeyVersion(tenant: tenant)
        let total = try await database.withTenant(tenant, context: "count sealed records to re-seal") { connection in
            try await SessionStore.countSealed(olderThan: target, on: connection)
        }
        var resealed = 0, batches = 0
        var drained = Set<Int>()
        // The keys a batch needs, looked up before its transaction (the batch finds out which).
        var needed: Set<Int> = [target]
        do {
            while true {
                let batch = batches + 1
                let prepared = try await sealer.prepared(tenant: tenant, versions: needed)
                let outcome = try await reseal(tenant: tenant, target: target, limit: batchSize, batch: batch, prepared: prepared)
                guard case .resealed(let count, let versions) = outcome else {
                    if case .needsKeys(let more) = outcome { needed.formUnion(more) }
                    continue
                }
                if count == 0 { break }
                batches = batch
                resealed += count
                drained.formUnion(versions)
                try hook?(.batchCommitted(batch))
                // Re-seals of other runs count too: `remaining` is read, not computed.
                let remaining = try await database.withTenant(tenant, context: "count sealed records to re-seal") { connection in
                    try await SessionStore.countSealed(olderThan: target, on: connection)
                }
                try await progress(Progress(targetVersion: target, resealed: resealed, remaining: remaining, total: total, batches: batches, done: false))
            }
        } catch {
            if batches > 0 {
                try? await record(tenant: tenant, actor: actor, target: target, resealed: resealed, batches: batches, drained: drained, interrupted: true)
            }
            throw error
        }
        try await record(tenant: tenant, actor: actor, target: target, resealed: resealed, batches: batches, drained: drained, interrupted: false)
        // Normally 0. A concurrent run may still hold rows this one waited out (it re-seals
        // them), so the count is read, not assumed.
        let remaining = try await database.withTenant(tenant, context: "count sealed records to re-seal") { connection in
            try await SessionStore.countSealed(olderThan: target, on: connection)
        }
        let last = Progress(targetVersion: target, resealed: resealed, remaining: remaining, total: total, batches: batches, done: true)
        try await progress(last)
        return last
    }

    /// What one batch did.
    private enum BatchOutcome: Sendable {
        /// Sessions re-sealed, and the versions they left.
        case resealed(Int, Set<Int>)
        /// Rows under versions whose keys were not looked up: nothing written; look them up and
        /// run the batch again.
        case needsKeys(Set<Int>)
    }

    /// One batch, one transaction, one database connection: the keys come looked up
    /// (`prepared`), so nothing in the transaction waits for a second connection.
    private func reseal(tenant: TenantID, target: Int, limit: Int, batch: Int, prepared: any PreparedPersonalDataSealing) async throws -> BatchOutcome {
        let hook = hook
        return try await database.withTenant(tenant, context: "re-seal batch") { connection in
            let rows = try await SessionStore.lockSealed(olderThan: target, limit: limit, on: connection)
            let missing = Set(rows.map(\.dataKeyVersion)).subtracting(prepared.versions)
            guard missing.isEmpty else { return .needsKeys(missing) }
            var versions = Set<Int>()
            for row in rows {
                var fields = [String: [UInt8]]()
                for (field, sealed) in [("name", row.sealedName), ("email", row.sealedEmail)] {
                    guard let sealed else { continue }
                    let context = VerificationSessions.sealingContext(tenant, row.id, field)
                    let text = try await prepared.open(sealed, keyVersion: row.dataKeyVersion, context: context)
                    fields[field] = try await prepared.seal(text, keyVersion: target, context: context)
                }
                guard try await SessionStore.replaceSealed(
                    row.id, name: fields["name"], email: fields["email"], from: row.dataKeyVersion, to: target, on: connection
                ) else {
                    // The row is locked by this transaction: only a bug gets here.
                    throw StorageError.notFound("sealed session locked for re-sealing")
                }
                versions.insert(row.dataKeyVersion)
            }
            if !rows.isEmpty { try hook?(.batchWritten(batch)) }
            return .resealed(rows.count, versions)
        }
    }

    private func record(tenant: TenantID, actor: String, target: Int, resealed: Int, batches: Int, drained: Set<Int>, interrupted: Bool) async throws {
        var details = [
            "resealed": "\(resealed)", "batches": "\(batches)",
            "from_versions": drained.sorted().map(String.init).joined(separator: " "),
        ]
        if interrupted { details["interrupted"] = "true" }
        try await audit.record(tenant: tenant, actor: actor, action: .keyReseal, target: "data/v\(target)", details: details)
    }
}

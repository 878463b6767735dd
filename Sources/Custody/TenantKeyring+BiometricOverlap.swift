public import CustosModel
public import Foundation
import HSM
import Storage

// The overlap of a biometric rotation (DESIGN §5, "rotation nobody notices"): the previous
// version keeps matching until its window ends, so subjects migrate on their next GREEN
// verification; then what did not migrate is dropped and the version retires.
extension TenantKeyring {
    /// Biometric versions `tenant`'s templates may be matched under now, newest first: the
    /// active one and any version whose `bio-seed` and `bio-prf` are both `retiring` inside
    /// their window. Cached like the active version (``activeCacheTTL``), window ends checked
    /// against the clock on every call.
    /// - Throws: ``CustodyError``.
    public func biometricMatchingVersions(_ tenant: TenantID) async throws -> [Int] {
        try await custody {
            let seed = try await cachedSigningVersions(tenant, .bioSeed).map(\.version)
            let prf = Set(try await cachedSigningVersions(tenant, .bioPRF).map(\.version))
            return seed.filter(prf.contains)
        }
    }

    /// Ends the overlap of biometric `version` now, in one transaction: every template still
    /// under it is deleted, `bio-seed` and `bio-prf` of that version become `retired` (verify
    /// only in name: nothing is left for them to match), and one audit entry records how many
    /// templates were dropped (a count, never subject references). The galleries of every
    /// instance are told to reload.
    ///
    /// Callers: ``closeEndedBiometricOverlaps(now:actor:)`` when the window has ended, and
    /// ``retire(_:_:version:actor:)`` for a window already over. Ending a window early drops
    /// enrolments of subjects who could still have migrated: officers reach it only through a
    /// two-officer approval, never through `retire`.
    ///
    /// Crash safety: the rows, the deletions and the audit entry commit together or not at all.
    /// - Returns: the templates dropped.
    /// - Throws: ``CustodyError/invalidTransition(_:_:_:from:to:)`` when neither key of the
    ///   version is `retiring`; ``CustodyError/changedConcurrently(_:_:_:)`` when a row changed
    ///   meanwhile (nothing written).
    @discardableResult
    public func closeBiometricOverlap(_ tenant: TenantID, version: Int, actor: String, reason: BiometricOverlapClosing = .windowEnded) async throws -> Int {
        try await custody {
            let close = try await prepareBiometricOverlapClose(tenant, version: version)
            let dropped = try await database.withTenant(tenant, context: "close biometric overlap", timeout: BiometricOverlapClose.transactionTimeout) { connection in
                try await close.apply(actor: actor, reason: reason, on: connection)
            }
            biometricOverlapClosed(close, dropped: dropped, reason: reason)
            return dropped
        }
    }

    /// The end of one biometric version's overlap, its rows sealed in the HSM ahead of the
    /// transaction that writes them (``apply(actor:reason:on:)``), so that a caller can put it
    /// in a transaction of its own: a two-officer approval commits with its effect.
    struct BiometricOverlapClose: Sendable {
        /// How long the transaction that applies it may take: it deletes every template still
        /// under the version, each withdrawn by migration 34's trigger (about 10 µs each:
        /// docs/benchmarks.md, "Session 23"), so the statement timeout (8 s) and the operation
        /// timeout (10 s) stopped a close at under a million; 2 minutes cover over ten million.
        /// The officer's client allows the calls that close an overlap as long (RemoteOptions).
        static let transactionTimeout: Duration = .seconds(120)

        let tenant: TenantID
        let version: Int
        let updates: [(record: KeyVersionRecord, expectedMAC: [UInt8])]
        let audit: AuditLog

        /// Retires both keys, drops the templates still under the version and appends the audit
        /// entry, on `connection` (the caller's transaction).
        /// - Returns: the templates dropped.
        /// - Throws: ``CustodyError/changedConcurrently(_:_:_:)`` when a row changed since it was read.
        func apply(actor: String, reason: BiometricOverlapClosing, details: [String: String] = [:], on connection: DatabaseTransaction) async throws -> Int {
            // Enrolments writing under this version finish first (their templates are dropped
            // below); later ones find it retired (TemplateStore+VersionLock).
            try await TemplateStore.lockBiometricVersionForClose(version, tenant: tenant, on: connection)
            for update in updates {
                guard try await KeyVersionStore.update(update.record, expectedMAC: update.expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, update.record.purpose, version)
                }
                // Other instances stop matching under it at once, not when their cache expires.
                try await KeyVersionStore.notifyStateChange(tenant, update.record.purpose, on: connection)
            }
            let dropped = try await TemplateStore.deleteAll(keyVersion: version, transactionTimeout: BiometricOverlapClose.transactionTimeout, on: connection)
            // Every instance, this one included (no instance has the empty name), reloads.
            if dropped > 0 { try await TemplateStore.notify(GalleryChange(instance: "", tenant: tenant, kind: .reset), on: connection) }
            try await AuditEntry(
                tenant: tenant, actor: actor, action: .biometricOverlapClose, target: "bio/v\(version)",
                details: details.merging(["templates_dropped": "\(dropped)", "reason": reason.rawValue]) { _, fixed in fixed }
            ).append(to: audit, on: connection)
            return dropped
        }
    }

    /// Reads and checks both keys of `version` and seals their `retired` rows.
    /// - Throws: ``CustodyError/invalidTransition(_:_:_:from:to:)`` when neither is `retiring`.
    func prepareBiometricOverlapClose(_ tenant: TenantID, version: Int) async throws -> BiometricOverlapClose {
        var updates = [(record: KeyVersionRecord, expectedMAC: [UInt8])]()
        var states = [KeyState]()
        for purpose in KeyPurpose.biometric {
            var row = try await database.withTenant(tenant, context: "read key version") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            }.orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
            try await authenticator.verify(row, pool: pool)
            states.append(row.state)
            // A key already retired (an old rotation without overlap) stays as it is.
            guard row.state == .retiring else { continue }
            let expectedMAC = row.rowMAC
            row.state = .retired
            row.retiringUntil = nil
            // A destruction's waiting period counts from here, not from the rotation.
            row.retiredAt = .wholeSecondsNow
            updates.append((try await authenticator.sealed(row, pool: pool), expectedMAC))
        }
        guard !updates.isEmpty else {
            throw CustodyError.invalidTransition(tenant, .bioSeed, version, from: states.first ?? .retired, to: .retired)
        }
        return BiometricOverlapClose(tenant: tenant, version: version, updates: updates, audit: audit)
    }

    /// After the close committed: this process's caches, and the log.
    func biometricOverlapClosed(_ close: BiometricOverlapClose, dropped: Int, reason: BiometricOverlapClosing) {
        for purpose in KeyPurpose.biometric { invalidate(close.tenant, purpose) }
        logger.notice("biometric overlap closed", metadata: [
            "tenant": "\(close.tenant)", "version": "\(close.version)", "templates_dropped": "\(dropped)", "reason": "\(reason.rawValue)",
        ])
    }

    /// One biometric overlap closed by ``closeEndedBiometricOverlaps(now:actor:)``.
    public struct ClosedBiometricOverlap: Sendable, Hashable {
        public let tenant: TenantID
        public let version: Int
        public let templatesDropped: Int
    }

    /// Closes every biometric overlap whose window ended by `now`, reading tenants in batches (run at
    /// `serve` start-up and periodically; tests pass a clock of their own). A tenant that fails
    /// is logged and skipped: the next run tries again, and until then its expired version no
    /// longer matches anyway (the window is checked on every lookup).
    /// - Returns: what was closed.
    /// - Throws: ``CustodyError`` only when the tenants cannot be listed.
    @discardableResult
    public func closeEndedBiometricOverlaps(now: Date = Date(), actor: String = "custos") async throws -> [ClosedBiometricOverlap] {
        let tenants = try await custody { try await TenantStore(database).list().map(\.id) }
        var closed = [ClosedBiometricOverlap]()
        var start = 0
        while start < tenants.count {
            let batch = Array(tenants[start..<min(start + Self.overlapScanBatch, tenants.count)])
            start += batch.count
            let ended: [(tenant: TenantID, versions: [Int])]
            do {
                ended = try await endedBiometricOverlaps(batch, now: now)
            } catch {
                logger.error("looking for ended biometric overlaps failed; the next run retries", metadata: [
                    "tenants": "\(batch.count)", "error": "\(error)",
                ])
                continue
            }
            for (tenant, versions) in ended {
                for version in versions {
                    do {
                        let dropped = try await closeBiometricOverlap(tenant, version: version, actor: actor, reason: .windowEnded)
                        closed.append(ClosedBiometricOverlap(tenant: tenant, version: version, templatesDropped: dropped))
                    } catch CustodyError.changedConcurrently {
                        // Another instance's closer got there first: its transaction did the work.
                        continue
                    } catch {
                        logger.error("closing an ended biometric overlap failed; the next run retries", metadata: [
                            "tenant": "\(tenant)", "error": "\(error)",
                        ])
                    }
                }
            }
        }
        return closed
    }

    /// Tenants whose key versions one read-only transaction scans: each tenant costs two
    /// statements (scope, read) instead of two transactions of its own, so a pass over 10,000
    /// tenants — which `serve` starts at once — is 20 transactions, not 20,000 (docs/benchmarks.md,
    /// "Tenant scale").
    static let overlapScanBatch = 500

    /// The biometric versions of each of `tenants` with a key `retiring` whose window ended by
    /// `now` (tenants with none are left out), read in one transaction.
    func endedBiometricOverlaps(_ tenants: [TenantID], now: Date) async throws -> [(tenant: TenantID, versions: [Int])] {
        try await custody {
            try await database.withTransaction(context: "read key versions") { connection in
                var ended = [(tenant: TenantID, versions: [Int])]()
                for tenant in tenants {
                    try await connection.scope(to: tenant)
                    var versions = Set<Int>()
                    for row in try await KeyVersionStore.all(on: connection)
                    where KeyPurpose.biometric.contains(row.purpose) && row.state == .retiring && (row.retiringUntil.map { $0 <= now } ?? true) {
                        versions.insert(row.version)
                    }
                    if !versions.isEmpty { ended.append((tenant, versions.sorted())) }
                }
                return ended
            }
        }
    }

    /// When the overlap of `purpose`'s version `previous` ends if it is rotated now: the end
    /// its sibling key of the same version already has (the pair ends together, also when a
    /// crash left one behind), else now plus the tenant's `bio_overlap_days`; `nil` for none.
    func biometricOverlapEnd(_ tenant: TenantID, rotating purpose: KeyPurpose, from previous: Int) async throws -> Date? {
        let sibling: KeyPurpose = purpose == .bioSeed ? .bioPRF : .bioSeed
        let audit = audit
        let (row, days) = try await database.withTenant(tenant, context: "read biometric overlap") { connection in
            // Under the policy's change lock: a change committing between the row's read and
            // the entries' would otherwise read as a forgery (helper-85).
            try await TenantPolicyStore.lockForChange(tenant: tenant, on: connection)
            let policy = try await TenantPolicyStore.get(on: connection)
            // Only the audited policy's overlap is believed: a longer one the database's writer
            // set would keep the old version matching (and its templates stored) for longer.
            guard TenantPolicyStore.isAttested(policy, by: try await audit.newestAuthenticEntry(action: .tenantPolicy, tenant: tenant, on: connection)) else {
                throw CustodyError.tenantPolicyTampered(tenant)
            }
            return (
                try await KeyVersionStore.get(tenant, sibling, version: previous, on: connection),
                policy?.bioOverlapDays ?? TenantPolicyStore.defaultBioOverlapDays
            )
        }
        if let row, row.state == .retiring || row.state == .retired {
            // Only a MAC-valid row's window is believed.
            try await authenticator.verify(row, pool: pool)
            return row.state == .retiring ? row.retiringUntil : nil
        }
        return Self.end(of: .seconds(days * 86_400))
    }
}

/// Why a biometric overlap was closed (recorded in its audit entry).
public enum BiometricOverlapClosing: String, Sendable, Hashable {
    /// The tenant's window (`bio_overlap_days` after the rotation) ended.
    case windowEnded = "window_ended"
    /// Officers ended it early, with two officers' approval.
    case approvedEarly = "approved_early"
}

extension KeyPurpose {
    /// The two keys one biometric version covers, rotated and retired together.
    static let biometric: [KeyPurpose] = [.bioSeed, .bioPRF]

    var isBiometric: Bool { self == .bioSeed || self == .bioPRF }
}

import CustosModel
import Foundation
import HSM
import SecureMemory
import Storage

// Key states anchored outside PostgreSQL: the HSM's list (``KeyStateAnchor``) is checked on
// every fresh read of a version, so an older row put back from a backup (blob and MAC included)
// undoes neither a destruction, nor a disable, nor a scheduled destruction, nor an offboarding.
extension TenantKeyring {
    /// The anchored list as last read, with the cache generation it was read at.
    struct AnchoredStatesSnapshot: Sendable {
        let states: AnchoredKeyStates
        let generation: UInt64
        let fetched: ContinuousClock.Instant
    }

    /// Throws the error ``CustodyError`` a use of `record`'s version gets when the HSM's list
    /// forbids it, whatever the row says. The list is re-read after any invalidation (every
    /// change notifies every keyring) and at least every ``cacheLifetime``.
    func requireAnchoredStateAllows(_ record: KeyVersionRecord) async throws {
        do {
            try await anchoredStates().requireUsable(KeyStateAnchor.Entry(record))
        } catch let error as CustodyError {
            // The row allowed the use (it was checked first): it is an older copy put back, or a
            // change was anchored and its transaction then failed to commit.
            logger.error("the HSM's list of key states forbids a use the database row allows (a replayed row?)", metadata: [
                "tenant": "\(record.tenant)", "purpose": "\(record.purpose.rawValue)", "version": "\(record.version)", "error": "\(error)",
            ])
            throw error
        }
    }

    /// The anchored key states, cached until the next invalidation or ``cacheLifetime``. A token
    /// without the list (never written yet) forbids nothing; start-up reconciliation writes it
    /// (``reconcileKeyStateAnchor()``).
    /// - Parameter fresh: read the token whatever the cache holds (decisions that destroy).
    func anchoredStates(fresh: Bool = false) async throws -> AnchoredKeyStates {
        let generation = currentCacheGeneration, now = ContinuousClock.now
        if !fresh, let cached = anchoredStatesCache.withLock({ $0 }), cached.generation == generation, now - cached.fetched < cacheLifetime {
            return cached.states
        }
        // Every key-state notice invalidates the snapshot: the callers that miss together read
        // the token once (a fresh read joins no earlier one).
        let read = { @Sendable [self] () async throws -> AnchoredKeyStates in
            let states: AnchoredKeyStates
            switch try await keyStateAnchor.read() {
            case .missing: states = AnchoredKeyStates()
            case .invalid: throw CustodyError.keyStateAnchorInvalid
            case .contents(let contents): states = contents.states
            }
            anchoredStatesCache.withLock { $0 = AnchoredStatesSnapshot(states: states, generation: generation, fetched: now) }
            return states
        }
        return fresh ? try await read() : try await anchoredStatesRefreshes.run(generation, read)
    }

    /// Applies `change` to the HSM's list on the caller's transaction, before it commits: one
    /// read-modify-write under an advisory lock held to the commit, so concurrent changes on
    /// several instances are all kept. A crash after this and before the commit leaves the list
    /// ahead of the database, which fails closed (the version is refused; reconciliation rolls a
    /// destruction forward, an officer repeats a disable or enable). Call it after the
    /// transaction's own writes and before its audit entry (locks are always taken in that
    /// order: this one, then the audit log's); the caller invalidates after the commit.
    /// - Parameter tenant: the tenant the transaction is scoped to, restored after a rebuild of
    ///   a missing list (which reads every tenant's rows).
    /// - Throws: ``CustodyError/keyStateAnchorInvalid``, ``HSMError``.
    func changeAnchoredStates(
        on connection: DatabaseTransaction, scopedTo tenant: TenantID?, actor: String, _ change: (inout AnchoredKeyStates) -> Void
    ) async throws {
        try await KeyStateAnchorStore.lock(on: connection)
        let current: KeyStateAnchor.Contents
        var rebuilt: AnchoredKeyStates?
        switch try await keyStateAnchor.read() {
        case .invalid: throw CustodyError.keyStateAnchorInvalid
        case .contents(let contents): current = contents
        case .missing:
            // Sequence 0: not written yet. The rows read include the caller's own uncommitted
            // change, which is no finding of the rebuild.
            rebuilt = try await authenticStates(on: connection)
            current = KeyStateAnchor.Contents(seq: 0, states: rebuilt!)
            if let tenant { try await connection.scope(to: tenant) }
        }
        var states = current.states
        change(&states)
        // A replica token that lags (a write failed half-way, a restore from shares) is brought
        // up to date by any change, or by reconciliation's empty one.
        guard states != current.states || current.seq == 0 || !current.onEveryToken else { return }
        try await keyStateAnchor.write(states, seq: current.seq + 1, rootKeys: rootKeys)
        var ownChange = AnchoredKeyStates()
        change(&ownChange)
        // A new token of a new installation has nothing to rebuild: only a rebuild that found
        // something (a token restored from shares, an upgrade) is worth an entry.
        if let rebuilt, rebuilt != ownChange, rebuilt != AnchoredKeyStates() {
            try await AuditEntry(tenant: nil, actor: actor, action: .keyStateAnchorRebuild, target: KeyStateAnchor.label, details: [
                "destroyed": "\(rebuilt.destroyed.count)", "disabled": "\(rebuilt.disabled.count)",
                "scheduled": "\(rebuilt.scheduled.count)", "offboarding": "\(rebuilt.offboarding.count)",
            ]).append(to: audit, on: connection)
        }
    }

    /// The number of a new version of `purpose`: above every row's and above every version the
    /// HSM's list names. A version number is never reused: a row a database writer deleted must
    /// not hand its number — and with it the list's destroyed, disabled or scheduled mark, which
    /// would refuse the new key and have start-up reconciliation destroy it — to a new key.
    func nextVersion(_ tenant: TenantID, _ purpose: KeyPurpose, after existing: [KeyVersionRecord]) async throws -> Int {
        let listed = try await anchoredStates(fresh: true).highestVersion(tenant, purpose) ?? 0
        return max(existing.map(\.version).max() ?? 0, listed) + 1
    }

    /// Start-up: writes the HSM's list when the token has none (a new token, one restored from
    /// custodians' shares, or the first start of this version), rebuilt from what the database
    /// holds then; and completes every destruction the list holds whose row is not destroyed —
    /// a crash between the list and the commit, or a destroyed row put back from a backup.
    /// - Returns: the destructions completed.
    func reconcileKeyStateAnchor() async throws -> [Reconciliation] {
        try await database.withTransaction(context: "write missing key state anchor") { connection in
            try await self.changeAnchoredStates(on: connection, scopedTo: nil, actor: "custos") { _ in }
        }
        invalidate(prefix: "")
        await warnAboutUnlistedDisabledTenants()
        var completed = [Reconciliation]()
        for entry in try await anchoredStates().destroyed.sorted() {
            if try await completeAnchoredDestruction(entry) {
                completed.append(.destructionCompleted(entry.tenant, entry.purpose, version: entry.version))
            }
        }
        return completed
    }

    /// Logs the tenants whose row says disabled but whose disable the HSM's list does not hold
    /// (disabled by a build before session 20, or the list rebuilt on a new token): the database's
    /// writer alone could set them back to active. `custos tenant disable` again puts each on the list.
    private func warnAboutUnlistedDisabledTenants() async {
        do {
            let inactive = try await database.withTransaction(context: "read disabled tenants") { connection in
                try await TenantStore.inactive(on: connection)
            }
            let states = try await anchoredStates()
            let listed = states.disabledTenants.union(states.offboarding)
            let unlisted = inactive.filter { !listed.contains($0) }.map(\.rawValue).sorted()
            guard !unlisted.isEmpty else { return }
            logger.warning("disabled tenants the HSM's list of key states does not hold: run custos tenant disable again for each", metadata: [
                "tenants": "\(unlisted)",
            ])
        } catch {
            logger.warning("could not compare disabled tenants with the HSM's list", metadata: ["error": "\(error)"])
        }
    }

    /// Destroys the row of a version the HSM lists as destroyed, when the row is MAC-valid and
    /// not destroyed (its token objects too). A row failing its MAC is left (it is refused anyway).
    /// - Returns: whether there was anything to do.
    private func completeAnchoredDestruction(_ entry: KeyStateAnchor.Entry) async throws -> Bool {
        let (tenant, purpose, version) = (entry.tenant, entry.purpose, entry.version)
        guard var row = try await database.withTenant(tenant, context: "read anchored destroyed key version", { connection in
            try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
        }), row.state != .destroyed else { return false }
        guard try await authenticator.isAuthentic(row, pool: pool) else {
            logger.error("a version the HSM lists as destroyed has a row that fails its MAC; it stays refused", metadata: [
                "tenant": "\(tenant)", "purpose": "\(purpose.rawValue)", "version": "\(version)",
            ])
            return false
        }
        let expectedMAC = row.rowMAC, checkValue = row.checkValue
        let pending = row.tokenLabel.map { PendingTokenDestructionStore.Entry(label: $0, tenant: tenant, purpose: purpose, version: version) }
        row.state = .destroyed
        row.wrappedKey = nil
        row.tokenLabel = nil
        row.destroyedAt = row.destroyedAt ?? .wholeSecondsNow
        let sealed = try await authenticator.sealed(row, pool: pool)
        let audit = audit
        try await database.withTenant(tenant, context: "complete anchored key destruction") { connection in
            guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                throw CustodyError.changedConcurrently(tenant, purpose, version)
            }
            if let pending { try await PendingTokenDestructionStore.insert(pending, on: connection) }
            try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
            try await AuditEntry(tenant: tenant, actor: "custos", action: .keyDestroy, target: "\(purpose.rawValue)/v\(version)", details: [
                "kcv": Hex.encode(checkValue), "completed": "the HSM lists it as destroyed",
            ]).append(to: audit, on: connection)
        }
        invalidate(tenant, purpose)
        if let pending { try await destroyTokenObjects(pending) }
        return true
    }
}

// What the database says is believed only with a MAC behind it: the rows and the offboarding
// approvals are written by whoever can write the database, and a destruction on the HSM's list
// is for good, so a forged row would otherwise destroy a live (or future) version without any
// officer.
extension TenantKeyring {
    /// The states MAC-valid rows and approvals give, to rebuild a missing list; forged rows are
    /// logged and left out. Leaves `connection` scoped to the last tenant read.
    func authenticStates(on connection: DatabaseTransaction) async throws -> AnchoredKeyStates {
        var states = AnchoredKeyStates()
        for row in try await KeyStateAnchorStore.allRows(on: connection) {
            guard row.state == .destroyed || row.disabledAt != nil || row.destructionDueAt != nil else { continue }
            guard try await authenticator.isAuthentic(row, pool: pool) else {
                logger.error("a key version row that fails its MAC was left out of the rebuilt list of key states", metadata: [
                    "tenant": "\(row.tenant)", "purpose": "\(row.purpose.rawValue)", "version": "\(row.version)",
                ])
                continue
            }
            let entry = KeyStateAnchor.Entry(row)
            if row.state == .destroyed {
                states.destroy(entry)
                continue
            }
            if row.disabledAt != nil { states.disabled.insert(entry) }
            if let due = row.destructionDueAt { states.scheduled[entry] = Int64(due.timeIntervalSince1970.rounded(.down)) }
        }
        for request in try await TenantOffboardingStore.approved(on: connection) {
            if try await OffboardingApprovalAuthenticator.isAuthentic(request, pool: pool) { states.offboarding.insert(request.tenant) }
        }
        // Disabled tenants are not rebuilt: `tenants.status` has no MAC, and no command enables a
        // tenant again, so a status the database's writer set would become a disable for good
        // (helper-76). Start-up names the tenants the list lacks (``warnAboutUnlistedDisabledTenants()``).
        return states
    }
}

extension KeyStateAnchor.Entry {
    init(_ record: KeyVersionRecord) {
        self.init(tenant: record.tenant, purpose: record.purpose, version: record.version)
    }
}

import CustosModel
import Foundation
import HSM
import Storage

// Destructions anchored outside PostgreSQL: the HSM's list of destroyed versions
// (``DestroyedVersionsAnchor``) is checked on every fresh read of a version, so a destroyed
// version's row put back from a backup (blob and MAC included) is refused.
extension TenantKeyring {
    /// The anchored list as last read, with the cache generation it was read at.
    struct DestroyedVersionsSnapshot: Sendable {
        let entries: Set<DestroyedVersionsAnchor.Entry>
        let generation: UInt64
        let fetched: ContinuousClock.Instant
    }

    /// Throws ``CustodyError/keyDestroyed(_:_:_:)`` when the HSM lists `record`'s version as
    /// destroyed, whatever the row says. The list is re-read after any invalidation (a
    /// destruction by another instance notifies every keyring) and at least every
    /// ``cacheLifetime``.
    func requireNotAnchoredDestroyed(_ record: KeyVersionRecord) async throws {
        let entry = DestroyedVersionsAnchor.Entry(tenant: record.tenant, purpose: record.purpose, version: record.version)
        if try await anchoredDestructions().contains(entry) {
            logger.error("a key version the HSM lists as destroyed was read back from the database (a replayed row?)", metadata: [
                "tenant": "\(record.tenant)", "purpose": "\(record.purpose.rawValue)", "version": "\(record.version)",
            ])
            throw CustodyError.keyDestroyed(record.tenant, record.purpose, record.version)
        }
    }

    /// The anchored destroyed versions, cached until the next invalidation or ``cacheLifetime``.
    /// A token without the list (never written yet) lists nothing; start-up reconciliation
    /// writes it (``reconcileDestructionAnchor()``).
    func anchoredDestructions() async throws -> Set<DestroyedVersionsAnchor.Entry> {
        let generation = currentCacheGeneration, now = ContinuousClock.now
        if let cached = destroyedVersions.withLock({ $0 }), cached.generation == generation, now - cached.fetched < cacheLifetime {
            return cached.entries
        }
        let entries: Set<DestroyedVersionsAnchor.Entry>
        switch try await destructionAnchor.read() {
        case .missing: entries = []
        case .invalid: throw CustodyError.destructionAnchorInvalid
        case .contents(let contents): entries = contents.entries
        }
        destroyedVersions.withLock { $0 = DestroyedVersionsSnapshot(entries: entries, generation: generation, fetched: now) }
        return entries
    }

    /// Adds `entries` (committed destructions, listed in `pending_destruction_anchors`) to the
    /// HSM's list and takes them off the pending list: one read-modify-write under an advisory
    /// lock, so concurrent destructions on several instances all end up listed. A missing list
    /// is first rebuilt from the database, or writing it would forget earlier destructions.
    /// - Throws: ``CustodyError`` (the entries stay pending: the next reconciliation retries).
    func anchorDestructions(_ entries: [PendingDestructionAnchorStore.Entry], actor: String) async throws {
        guard !entries.isEmpty else { return }
        let (anchor, rootKeys, audit) = (destructionAnchor, rootKeys, audit)
        try await database.withTransaction(context: "anchor key destructions") { connection in
            try await PendingDestructionAnchorStore.lockAnchor(on: connection)
            var contents: DestroyedVersionsAnchor.Contents
            var rebuilt: Int?
            switch try await anchor.read() {
            case .invalid: throw CustodyError.destructionAnchorInvalid
            case .contents(let stored): contents = stored
            case .missing:
                let recorded = try await self.authenticDestroyedVersions(on: connection)
                contents = DestroyedVersionsAnchor.Contents(seq: 0, entries: recorded)
                rebuilt = contents.entries.count
            }
            let added = Set(entries.map(DestroyedVersionsAnchor.Entry.init))
            // The first destruction on a new token finds only itself: nothing was rebuilt.
            if rebuilt != nil, contents.entries.isSubset(of: added) { rebuilt = nil; contents.entries = [] }
            // A replica token that lags (a write failed half-way) is brought up to date too.
            if contents.seq == 0 || !added.isSubset(of: contents.entries) || !contents.onEveryToken {
                contents.entries.formUnion(added)
                try await anchor.write(contents.entries, seq: contents.seq + 1, rootKeys: rootKeys)
            }
            for entry in entries { try await PendingDestructionAnchorStore.delete(entry, on: connection) }
            if let rebuilt {
                try await AuditEntry(tenant: nil, actor: actor, action: .keyDestructionAnchorRebuild, target: DestroyedVersionsAnchor.label, details: [
                    "versions": "\(rebuilt)",
                ]).append(to: audit, on: connection)
            }
        }
        invalidate(prefix: "")
    }

    /// Start-up: writes the HSM's list when the token has none (a new token, one restored from
    /// custodians' shares, or the first start of this version), rebuilt from the destroyed rows
    /// the database holds then, and adds the destructions a crash left pending.
    /// - Returns: the pending destructions now anchored.
    func reconcileDestructionAnchor() async throws -> [PendingDestructionAnchorStore.Entry] {
        let pending = try await authenticPendingDestructions()
        if !pending.isEmpty {
            try await anchorDestructions(pending, actor: "custos")
        } else {
            switch try await destructionAnchor.read() {
            case .missing: try await rebuildDestructionAnchor()
            case .contents(let contents) where !contents.onEveryToken: try await replicateDestructionAnchor()
            case .contents, .invalid: break
            }
        }
        return pending
    }

    /// Writes the newest list to every token again when one lacks it or lags (a replica
    /// restored from shares, a write that failed half-way), so that losing any one token never
    /// loses a destruction.
    private func replicateDestructionAnchor() async throws {
        let (anchor, rootKeys) = (destructionAnchor, rootKeys)
        try await database.withTransaction(context: "replicate destruction anchor") { connection in
            try await PendingDestructionAnchorStore.lockAnchor(on: connection)
            guard case .contents(let contents) = try await anchor.read(), !contents.onEveryToken else { return }
            try await anchor.write(contents.entries, seq: contents.seq + 1, rootKeys: rootKeys)
        }
    }

    /// Writes the list from the database's destroyed rows when the token has none.
    private func rebuildDestructionAnchor() async throws {
        let (anchor, rootKeys, audit) = (destructionAnchor, rootKeys, audit)
        try await database.withTransaction(context: "rebuild destruction anchor") { connection in
            try await PendingDestructionAnchorStore.lockAnchor(on: connection)
            guard try await anchor.read() == .missing else { return }
            let recorded = try await self.authenticDestroyedVersions(on: connection)
            try await anchor.write(recorded, seq: 1, rootKeys: rootKeys)
            // A new token of a new installation has nothing to rebuild: only a rebuild that
            // found destructions (a token restored from shares, an upgrade) is worth an entry.
            guard !recorded.isEmpty else { return }
            try await AuditEntry(tenant: nil, actor: "custos", action: .keyDestructionAnchorRebuild, target: DestroyedVersionsAnchor.label, details: [
                "versions": "\(recorded.count)",
            ]).append(to: audit, on: connection)
        }
        invalidate(prefix: "")
    }
}

// What the database says was destroyed is believed only with a row MAC behind it: the pending
// lines and the rows are written by whoever can write the database, and the HSM's list never
// shrinks, so a forged line or row would otherwise destroy a live (or future) version for good,
// without any officer.
extension TenantKeyring {
    /// The lines of `pending_destruction_anchors` whose version has a MAC-valid destroyed row
    /// (what custody's destruction committed). Other lines stay, logged: a forged line, or a
    /// destroyed row replaced from a backup after a crash (which the list cannot catch then).
    /// - Parameter tenant: only this tenant's lines (offboarding); all when nil.
    func authenticPendingDestructions(of tenant: TenantID? = nil) async throws -> [PendingDestructionAnchorStore.Entry] {
        let lines = try await database.withTransaction(context: "list pending destruction anchors") { connection in
            try await PendingDestructionAnchorStore.all(on: connection)
        }.filter { tenant == nil || $0.tenant == tenant }
        var authentic = [PendingDestructionAnchorStore.Entry]()
        for line in lines {
            let row = try await database.withTenant(line.tenant, context: "read destroyed key version") { connection in
                try await KeyVersionStore.get(line.tenant, line.purpose, version: line.version, on: connection)
            }
            if let row, row.state == .destroyed, try await authenticator.isAuthentic(row, pool: pool) {
                authentic.append(line)
            } else {
                logger.error("a pending destruction whose row is not a MAC-valid destroyed row was not added to the HSM's list", metadata: [
                    "tenant": "\(line.tenant)", "purpose": "\(line.purpose.rawValue)", "version": "\(line.version)",
                ])
            }
        }
        return authentic
    }

    /// Every destroyed version with a MAC-valid row, to rebuild a missing list; forged rows are
    /// logged and left out.
    func authenticDestroyedVersions(on connection: DatabaseTransaction) async throws -> Set<DestroyedVersionsAnchor.Entry> {
        var entries = Set<DestroyedVersionsAnchor.Entry>()
        for row in try await PendingDestructionAnchorStore.allDestroyedRows(on: connection) {
            guard try await authenticator.isAuthentic(row, pool: pool) else {
                logger.error("a destroyed row that fails its MAC was left out of the rebuilt list of destroyed versions", metadata: [
                    "tenant": "\(row.tenant)", "purpose": "\(row.purpose.rawValue)", "version": "\(row.version)",
                ])
                continue
            }
            entries.insert(DestroyedVersionsAnchor.Entry(tenant: row.tenant, purpose: row.purpose, version: row.version))
        }
        return entries
    }
}

extension DestroyedVersionsAnchor.Entry {
    init(_ pending: PendingDestructionAnchorStore.Entry) {
        self.init(tenant: pending.tenant, purpose: pending.purpose, version: pending.version)
    }
}

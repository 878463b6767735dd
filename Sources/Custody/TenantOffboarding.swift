public import CustosModel
public import Foundation
public import Storage

/// Offboarding a tenant by crypto-shredding (DESIGN §5), under the same two-officer rules as a
/// key destruction (``KeyDestructionApprovals``): one officer requests, a different one approves
/// before the request expires — with an HSM MAC over the approval naming the approver's
/// certificate, void once it is revoked.
///
/// - Approval disables the tenant at once (API keys refused everywhere) and every one of its key
///   versions (refused on every instance within a second), in one transaction.
/// - Once due (`waitingDays` after approval), ``complete(_:officer:)`` — or the sweep of `custos
///   serve` — destroys every key version's material (metadata kept), then deletes the tenant's
///   data rows in batches, tells every instance to drop the tenant's galleries, and marks the
///   offboarding complete. Each step commits on its own and skips what is already done, so a run
///   killed between any two steps is finished by the next.
public final class TenantOffboarding: Sendable {
    /// Steps of ``complete(_:officer:)``, for tests that inject a crash after them.
    public enum Step: Sendable, Hashable {
        /// One more key version's material was destroyed.
        case keyVersionDestroyed
        /// Every key version is destroyed; the data rows are not deleted yet.
        case keysDestroyed
        /// One more batch of data rows was deleted.
        case dataBatchDeleted
    }

    let database: Database
    let keyring: TenantKeyring
    let audit: AuditLog
    public let lifetime: Duration
    let now: @Sendable () -> Date
    let stepHook: (@Sendable (Step) throws -> Void)?
    /// Rows of one table one transaction deletes at most (see ``complete(_:officer:)``).
    let deletionBatchSize: Int
    public static let defaultDeletionBatchSize = 5_000

    /// - Parameter stepHook: for tests only (a throw stands for a crash after that step).
    public init(
        database: Database, keyring: TenantKeyring, audit: AuditLog, lifetime: Duration = .seconds(24 * 3600),
        now: @escaping @Sendable () -> Date = { Date() }, deletionBatchSize: Int = TenantOffboarding.defaultDeletionBatchSize,
        stepHook: (@Sendable (Step) throws -> Void)? = nil
    ) {
        self.deletionBatchSize = max(1, deletionBatchSize)
        self.database = database
        self.keyring = keyring
        self.audit = audit
        self.lifetime = lifetime
        self.now = now
        self.stepHook = stepHook
    }

    public typealias Request = TenantOffboardingStore.Row

    /// - Parameter waitingDays: days between approval and shredding
    ///   (``KeyDestructionApprovals/waitingDaysRange``).
    /// - Throws: ``OffboardingError``, ``DestructionApprovalError/waitingDaysOutOfRange(_:)``, ``CustodyError``.
    public func request(_ tenant: TenantID, officer: String, waitingDays: Int = KeyDestructionApprovals.defaultWaitingDays) async throws -> Request {
        guard KeyDestructionApprovals.waitingDaysRange.contains(waitingDays) else { throw DestructionApprovalError.waitingDaysOutOfRange(waitingDays) }
        guard try await keyring.tenant(tenant) != nil else { throw CustodyError.unknownTenant(tenant) }
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let unsealed = Request(
            id: UUID(), tenant: tenant, requestedBy: officer, requestedAt: at,
            expiresAt: at.addingTimeInterval(Double(lifetime.components.seconds)), waitingDays: waitingDays
        )
        let pool = keyring.pool, rootKeys = keyring.rootKeys
        let mac = try await custody { try await pool.hmacSHA256(key: rootKeys.mac, data: OffboardingApprovalAuthenticator.requestMessage(for: unsealed)) }
        let row = Request(
            id: unsealed.id, tenant: tenant, requestedBy: officer, requestedAt: at, expiresAt: unsealed.expiresAt, waitingDays: waitingDays,
            requestMAC: mac, requestMACVersion: rootKeys.macVersion
        )
        let audit = audit
        try await custody {
            try await database.withTransaction(context: "request tenant offboarding") { connection in
                try await TenantOffboardingStore.insert(row, on: connection)
                try await audit.append(
                    tenant: tenant, actor: officer, action: .tenantOffboardRequest, target: tenant.rawValue,
                    details: ["request": row.id.uuidString.lowercased(), "waiting_days": String(waitingDays)], on: connection
                )
            }
        }
        return row
    }

    /// The second officer's approval: the tenant and every key version of it are disabled in
    /// the same transaction.
    /// - Throws: ``OffboardingError``; ``CustodyError``.
    public func approve(_ id: UUID, officer: String, certificateSerial: String) async throws -> Request {
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let keyring = keyring, audit = audit, pool = keyring.pool, rootKeys = keyring.rootKeys
        let tenant = try await custody {
            try await database.withTransaction(context: "approve tenant offboarding") { connection in
                guard let row = try await TenantOffboardingStore.get(id, forUpdate: true, on: connection) else { throw OffboardingError.unknown(id) }
                guard row.requestedBy != officer else { throw OffboardingError.approverIsRequester(id) }
                // Only a request Custos recorded, unchanged since, can be approved.
                guard try await OffboardingApprovalAuthenticator.isAuthenticRequest(row, pool: keyring.pool) else {
                    throw OffboardingError.requestNotAuthentic(id)
                }
                let revoked = try await CertificateRevocationStore.all(on: connection)
                guard !revoked.contains(certificateSerial) else { throw OffboardingError.approverRevoked(id) }
                if row.approvedBy != nil, try await OffboardingApprovalAuthenticator.isAuthentic(row, pool: pool),
                   !revoked.contains(row.approverCertificateSerial ?? "") {
                    throw OffboardingError.alreadyApproved(id)
                }
                guard at < row.expiresAt else { throw OffboardingError.expired(id) }
                let message = OffboardingApprovalAuthenticator.message(for: row, approvedBy: officer, certificateSerial: certificateSerial, approvedAt: at)
                let mac = try await pool.hmacSHA256(key: rootKeys.mac, data: message)
                try await TenantOffboardingStore.approve(
                    id, by: officer, certificateSerial: certificateSerial, at: at, mac: mac, macVersion: rootKeys.macVersion, on: connection
                )
                _ = try await TenantStore.setActive(row.tenant, false, on: connection)
                try await APIKeyStore.announceFlush(on: connection)
                try await CacheChange.tenantStatus(row.tenant).announce(on: connection)
                try await keyring.disableAll(row.tenant, actor: officer, on: connection)
                try await audit.append(
                    tenant: row.tenant, actor: officer, action: .tenantOffboardApprove, target: row.tenant.rawValue,
                    details: [
                        "request": id.uuidString.lowercased(),
                        "due": at.addingTimeInterval(Double(row.waitingDays) * 86_400).formatted(.iso8601),
                    ], on: connection
                )
                return row.tenant
            }
        }
        keyring.invalidate(prefix: tenant.rawValue + "/")
        return try await get(id)
    }

    /// Carries out a due offboarding, or finishes one a crash interrupted.
    /// - Returns: the request, now completed.
    /// - Throws: ``OffboardingError`` (not approved, approval void, not due); ``CustodyError``.
    public func complete(_ id: UUID, officer: String) async throws -> Request {
        let row = try await get(id)
        // `completed_at` has no MAC (the service role may set it): it is believed only when every
        // key version is a MAC-valid destroyed row; otherwise the shredding runs (again).
        if row.completedAt != nil, try await custody({ try await keyring.allVersionsDestroyed(row.tenant) }) { return row }
        guard row.approvedBy != nil else { throw OffboardingError.notApproved(id) }
        guard try await custody({ try await OffboardingApprovalAuthenticator.isAuthentic(row, pool: keyring.pool) }) else {
            throw OffboardingError.approvalNotAuthentic(id)
        }
        let revoked = try await custody {
            try await database.withTransaction(context: "read revoked certificates") { connection in
                try await CertificateRevocationStore.all(on: connection)
            }
        }
        if let serial = row.approverCertificateSerial, revoked.contains(serial) { throw OffboardingError.approverRevoked(id) }
        guard let due = row.dueAt, now() >= due else { throw OffboardingError.notDue(id, due: row.dueAt ?? .distantFuture) }

        // Step 1: every key version's material, one committed step each.
        let hook = stepHook
        var afterEach: (@Sendable () throws -> Void)?
        if let hook { afterEach = { @Sendable in try hook(.keyVersionDestroyed) } }
        _ = try await custody {
            try await keyring.shredAll(row.tenant, actor: officer, request: id, afterEach: afterEach)
        }
        try stepHook?(.keysDestroyed)
        // Step 2: the data rows in batches, each its own transaction with its own audit entry (a
        // large tenant's rows in one transaction outlived the timeouts, and every sweep failed
        // the same way with its keys already gone); a run cut off leaves the rest to the next,
        // the request not completed. A table is done at its first empty batch: a short one may
        // only mean another sweep took rows meanwhile.
        let (tenant, audit, limit) = (row.tenant, audit, deletionBatchSize)
        for table in TenantDataStore.Table.allCases {
            while true {
                let count = try await custody {
                    try await database.withTenant(tenant, context: "delete offboarded tenant's data") { connection in
                        let count = try await TenantDataStore.delete(tenant, from: table, limit: limit, on: connection)
                        if count > 0 {
                            try await audit.append(
                                tenant: tenant, actor: officer, action: .tenantOffboardDelete, target: tenant.rawValue,
                                details: [table.rawValue: String(count), "request": id.uuidString.lowercased()], on: connection
                            )
                            if table == .tenantPolicies { try await Self.recordPolicyRemoval(tenant, request: id, officer: officer, audit: audit, on: connection) }
                        }
                        return count
                    }
                }
                if count == 0 { break }
                try stepHook?(.dataBatchDeleted)
            }
        }
        // Step 3: what is left, the galleries' reset, the completion mark and its audit entry,
        // in one transaction.
        let at = now()
        try await custody {
            try await database.withTenant(tenant, context: "complete tenant offboarding") { connection in
                // Another instance's sweep may be finishing the same offboarding: the row lock
                // makes one of them record it, the other find it done (nothing left to delete).
                let marked = try await TenantOffboardingStore.get(id, forUpdate: true, on: connection)?.completedAt != nil
                let counts = try await TenantDataStore.deleteAll(tenant, on: connection)
                if marked, counts.values.allSatisfy({ $0 == 0 }) { return }
                // Every instance drops the tenant's galleries (fingerprints held in memory).
                try await TemplateStore.notify(GalleryChange(instance: "", tenant: tenant, kind: .reset), on: connection)
                if !marked { try await TenantOffboardingStore.markCompleted(id, at: at, on: connection) }
                if counts[TenantDataStore.Table.tenantPolicies.rawValue] ?? 0 > 0 { try await Self.recordPolicyRemoval(tenant, request: id, officer: officer, audit: audit, on: connection) }
                try await audit.append(
                    tenant: tenant, actor: officer, action: .tenantOffboard, target: tenant.rawValue,
                    details: counts.filter { $0.value > 0 }.mapValues { String($0) }.merging(["request": id.uuidString.lowercased()]) { $1 },
                    on: connection
                )
            }
        }
        return try await get(id)
    }

    /// An offboarding completed by a build that recorded no removal entry (before session 22)
    /// left a tenant whose newest `tenant.policy` entry records a row that is gone: every read
    /// of its policy (each retention run's) would be refused as the writer's deletion
    /// (helper-85). The sweep records the removal for a tenant whose every key version is a
    /// MAC-valid destroyed row (checked by the caller) and whose offboarding two officers
    /// approved (checked here).
    private func recordPolicyRemovalIfMissing(_ row: Request) async throws {
        let (audit, tenant) = (audit, row.tenant)
        // The entry vouches for a missing row: only for a tenant two officers really offboarded
        // (the approval's MAC, and the HSM's list of offboarding tenants), never on the request
        // row alone, which the writer can plant for a live tenant (helper-86).
        guard try await custody({ try await OffboardingApprovalAuthenticator.isAuthentic(row, pool: keyring.pool) }),
              try await keyring.anchoredStates().offboarding.contains(tenant) else { return }
        try await custody {
            try await database.withTenant(tenant, context: "record offboarded tenant's policy removal") { connection in
                try await TenantPolicyStore.lockForChange(tenant: tenant, on: connection)
                guard try await TenantPolicyStore.get(on: connection) == nil else { return }
                let newest = try await audit.newestAuthenticEntry(action: .tenantPolicy, tenant: tenant, on: connection)
                guard !TenantPolicyStore.isAttested(nil, by: newest) else { return }
                try await Self.recordPolicyRemoval(tenant, request: row.id, officer: "custos", audit: audit, on: connection)
            }
        }
    }

    /// A policy row is checked against the newest `tenant.policy` entry
    /// (``TenantPolicyStore/isAttested(_:by:)``): its removal is one, or the tenant's reads
    /// (retention's among them) would take the missing row for the database writer's deletion.
    private static func recordPolicyRemoval(
        _ tenant: TenantID, request: UUID, officer: String, audit: AuditLog, on connection: DatabaseTransaction
    ) async throws {
        try await audit.append(
            tenant: tenant, actor: officer, action: .tenantPolicy, target: tenant.rawValue,
            details: TenantPolicyStore.removalAuditDetails(request: request.uuidString.lowercased()), on: connection
        )
    }

    /// Completes every approved offboarding that is due (the sweep of `custos serve`).
    /// - Returns: those completed, and those refused with why.
    public func sweep(officer: String) async throws -> (completed: [Request], refused: [(Request, any Error)]) {
        let approved = try await custody {
            try await database.withTransaction(context: "find due offboardings") { connection in
                try await TenantOffboardingStore.approved(on: connection)
            }
        }
        // `completed_at` carries no MAC: a completed offboarding counts as done only while every
        // key version of its tenant is a MAC-valid destroyed row (one read per completed
        // offboarding per sweep), so a completion written into the database stops nothing. A
        // row failing its MAC refuses that offboarding only: one tampered row of a tenant long
        // gone must not stop the shredding of every other tenant that is due.
        var pending = [Request](), refused = [(Request, any Error)]()
        for row in approved {
            if row.completedAt == nil {
                pending.append(row)
                continue
            }
            do {
                if try await custody({ try await keyring.allVersionsDestroyed(row.tenant) }) == false {
                    pending.append(row)
                } else {
                    try await recordPolicyRemovalIfMissing(row)
                }
            } catch {
                refused.append((row, error))
            }
        }
        let at = now()
        var completed = [Request]()
        for row in pending where (row.dueAt.map { $0 <= at } ?? false) {
            do {
                completed.append(try await complete(row.id, officer: officer))
            } catch {
                refused.append((row, error))
            }
        }
        return (completed, refused)
    }

    public func get(_ id: UUID) async throws -> Request {
        let row = try await custody {
            try await database.withTransaction(context: "read tenant offboarding") { connection in
                try await TenantOffboardingStore.get(id, forUpdate: false, on: connection)
            }
        }
        guard let row else { throw OffboardingError.unknown(id) }
        return row
    }
}

/// Why an offboarding request was refused.
public enum OffboardingError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(UUID)
    case approverIsRequester(UUID)
    case alreadyApproved(UUID)
    case notApproved(UUID)
    case expired(UUID)
    case approvalNotAuthentic(UUID)
    case approverRevoked(UUID)
    case notDue(UUID, due: Date)
    /// The request's own HSM MAC is missing or wrong: it was written or changed in the database.
    case requestNotAuthentic(UUID)

    public var description: String {
        let request = { (id: UUID) in "offboarding request \(id.uuidString.lowercased())" }
        return switch self {
        case .unknown(let id): "no \(request(id))"
        case .approverIsRequester(let id): "\(request(id)) must be approved by a different officer than the one who made it"
        case .alreadyApproved(let id): "\(request(id)) is already approved"
        case .notApproved(let id): "\(request(id)) has no approval from a second officer yet"
        case .expired(let id): "\(request(id)) has expired; make a new one"
        case .approvalNotAuthentic(let id): "the approval of \(request(id)) fails its integrity check; it does not count"
        case .approverRevoked(let id): "the officer who approved \(request(id)) has had their certificate revoked; another officer must approve it"
        case .notDue(let id, let due): "\(request(id)) is due at \(due.formatted(.iso8601)); it cannot be carried out before"
        case .requestNotAuthentic(let id): "\(request(id)) fails its integrity check (changed or written outside Custos); make a new one"
        }
    }
}

public import CustosModel
public import Foundation
public import Storage

/// Destroying a key version takes two officers (DESIGN §10): one requests, a different one
/// approves before the request expires, then either carries it out — once, and still subject to
/// the keyring's own rules (retired, waiting period over, nothing stored still needs it).
///
/// An approval is sealed with an HSM MAC (see ``DestructionApprovalAuthenticator``) and names
/// the approver's certificate serial: one written into the database directly, or whose
/// approver's certificate has since been revoked, does not count.
public final class KeyDestructionApprovals: Sendable {
    let database: Database
    let keyring: TenantKeyring
    let audit: AuditLog
    public let lifetime: Duration
    let now: @Sendable () -> Date
    let authenticator = DestructionApprovalAuthenticator()
    /// Test hook: runs while an execution holds the request row locked, before the key is destroyed.
    let executionHook: (@Sendable (UUID) async throws -> Void)?

    /// - Parameter executionHook: for tests only (observing the row lock during an execution).
    public init(
        database: Database, keyring: TenantKeyring, audit: AuditLog, lifetime: Duration = .seconds(24 * 3600),
        now: @escaping @Sendable () -> Date = { Date() }, executionHook: (@Sendable (UUID) async throws -> Void)? = nil
    ) {
        self.database = database
        self.keyring = keyring
        self.audit = audit
        self.lifetime = lifetime
        self.now = now
        self.executionHook = executionHook
    }

    public typealias Request = DestructionRequestStore.Row

    /// Scheduled deletion: the waiting period between approval and destruction may be chosen
    /// in this range (days), as AWS KMS allows.
    public static let waitingDaysRange = 7...30
    /// The default waiting period (days): the longest, as in AWS KMS. The version is unusable
    /// from approval on, so a mistaken destruction shows up as failures while it can still be
    /// cancelled; waiting longer costs nothing but a row.
    public static let defaultWaitingDays = 30

    /// - Parameter waitingDays: days between approval and destruction (``waitingDaysRange``);
    ///   the version is unusable from approval on. The Admin RPC always passes one
    ///   (``defaultWaitingDays`` when the officer names none); `nil` keeps the unscheduled
    ///   form (carried out right after approval, before the request expires).
    /// - Throws: ``DestructionApprovalError/waitingDaysOutOfRange(_:)``; ``CustodyError``.
    public func request(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, officer: String, waitingDays: Int? = nil
    ) async throws -> Request {
        if let waitingDays, !Self.waitingDaysRange.contains(waitingDays) { throw DestructionApprovalError.waitingDaysOutOfRange(waitingDays) }
        let versions = try await keyring.versions(tenant)
        guard let record = versions.first(where: { $0.purpose == purpose && $0.version == version }) else {
            throw CustodyError.unknownKeyVersion(tenant, purpose, version)
        }
        guard record.state == .retired else { throw CustodyError.invalidTransition(tenant, purpose, version, from: record.state, to: .destroyed) }
        // Whole seconds: the request MAC covers the times, and PostgreSQL keeps microseconds only.
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let unsealed = Request(
            id: UUID(), tenant: tenant, purpose: purpose, version: version, requestedBy: officer, requestedAt: at,
            expiresAt: at.addingTimeInterval(Double(lifetime.components.seconds)), approvedBy: nil, approvedAt: nil, executedAt: nil,
            waitingDays: waitingDays
        )
        let (mac, macVersion) = try await custody { try await authenticator.requestMAC(for: unsealed, pool: keyring.pool, rootKeys: keyring.rootKeys) }
        let row = Request(
            id: unsealed.id, tenant: tenant, purpose: purpose, version: version, requestedBy: officer, requestedAt: at,
            expiresAt: unsealed.expiresAt, approvedBy: nil, approvedAt: nil, executedAt: nil,
            waitingDays: waitingDays, requestMAC: mac, requestMACVersion: macVersion
        )
        let audit = audit
        try await custody {
            try await database.withTransaction(context: "request key destruction") { connection in
                try await DestructionRequestStore.insert(row, on: connection)
                try await audit.append(
                    tenant: tenant, actor: officer, action: .keyDestroyRequest, target: "\(purpose.rawValue)/v\(version)",
                    details: ["request": row.id.uuidString.lowercased(), "waiting_days": waitingDays.map(String.init) ?? "none"], on: connection
                )
            }
        }
        return row
    }

    /// An approval that no longer counts (see ``execute(_:officer:waitingPeriod:)``) may be
    /// replaced by a new one.
    /// - Parameter certificateSerial: the serial (lower-case hex) of the certificate the approver
    ///   authenticated with; revoking it later voids the approval.
    /// - Throws: ``DestructionApprovalError`` when the approver requested it, or the request is
    ///   unknown, expired, already approved or carried out.
    public func approve(_ id: UUID, officer: String, certificateSerial: String) async throws -> Request {
        // Whole seconds: the MAC covers the time, and PostgreSQL keeps microseconds only.
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let keyring = self.keyring, pool = keyring.pool, rootKeys = keyring.rootKeys, authenticator = self.authenticator
        let audit = audit
        _ = try await custody {
            try await database.withTransaction(context: "approve key destruction") { connection in
                let row = try await Self.lock(id, on: connection)
                guard row.requestedBy != officer else { throw DestructionApprovalError.approverIsRequester(id) }
                // Only a request Custos recorded, unchanged since, can be approved.
                guard try await authenticator.isAuthenticRequest(row, pool: pool) else { throw DestructionApprovalError.requestNotAuthentic(id) }
                guard row.cancelledAt == nil else { throw DestructionApprovalError.cancelled(id) }
                guard row.executedAt == nil else { throw DestructionApprovalError.alreadyExecuted(id) }
                let revoked = try await CertificateRevocationStore.all(on: connection)
                guard !revoked.contains(certificateSerial) else { throw DestructionApprovalError.approverRevoked(id) }
                // A void approval (forged in the database, or by a since-revoked officer) may be replaced.
                if row.approvedBy != nil, try await authenticator.isAuthentic(row, pool: pool),
                   !revoked.contains(row.approverCertificateSerial ?? "") {
                    throw DestructionApprovalError.alreadyApproved(id)
                }
                guard at < row.expiresAt else { throw DestructionApprovalError.expired(id) }
                let (mac, macVersion) = try await authenticator.mac(
                    for: row, approvedBy: officer, certificateSerial: certificateSerial, approvedAt: at, pool: pool, rootKeys: rootKeys
                )
                try await DestructionRequestStore.approve(
                    id, by: officer, certificateSerial: certificateSerial, at: at, mac: mac, macVersion: macVersion, on: connection
                )
                // Scheduled deletion: the version is unusable from this commit on, on every
                // instance, until it is destroyed or the request is cancelled. The mark and the
                // approval commit together, so neither exists without the other; the mark goes
                // on the HSM's list before the audit entries (its lock first, as everywhere).
                let due = row.waitingDays.map { at.addingTimeInterval(Double($0) * 86_400) }
                if let due {
                    try await keyring.setDestructionDue(due, row.tenant, row.purpose, version: row.version, actor: officer, on: connection)
                }
                try await audit.append(
                    tenant: row.tenant, actor: officer, action: .keyDestroyApprove, target: "\(row.purpose.rawValue)/v\(row.version)",
                    details: ["request": id.uuidString.lowercased()], on: connection
                )
                if let due {
                    try await audit.append(
                        tenant: row.tenant, actor: officer, action: .keyDestroySchedule, target: "\(row.purpose.rawValue)/v\(row.version)",
                        details: ["request": id.uuidString.lowercased(), "due": due.formatted(.iso8601)], on: connection
                    )
                }
                return row
            }
        }
        let approved = try await get(id)
        keyring.invalidate(approved.tenant, approved.purpose)
        return approved
    }

    /// Cancels a request any time before it is carried out (one officer suffices: cancelling
    /// destroys nothing). A scheduled version becomes usable again at once, everywhere.
    /// - Throws: ``DestructionApprovalError`` (`unknown`, `alreadyExecuted`, `cancelled`); ``CustodyError``.
    public func cancel(_ id: UUID, officer: String) async throws -> Request {
        let at = Date(timeIntervalSince1970: now().timeIntervalSince1970.rounded(.down))
        let keyring = self.keyring, audit = self.audit
        try await custody {
            try await database.withTransaction(context: "cancel key destruction") { connection in
                let row = try await Self.lock(id, on: connection)
                guard row.executedAt == nil else { throw DestructionApprovalError.alreadyExecuted(id) }
                guard row.cancelledAt == nil else { throw DestructionApprovalError.cancelled(id) }
                try await DestructionRequestStore.cancel(id, by: officer, at: at, on: connection)
                var marked = row.approvedAt != nil && row.waitingDays != nil
                if !marked { marked = try await self.mayHaveMarked(row) }
                if marked {
                    try await keyring.setDestructionDue(nil, row.tenant, row.purpose, version: row.version, actor: officer, on: connection)
                }
                try await audit.append(
                    tenant: row.tenant, actor: officer, action: .keyDestroyCancel, target: "\(row.purpose.rawValue)/v\(row.version)",
                    details: ["request": id.uuidString.lowercased()], on: connection
                )
            }
        }
        let cancelled = try await get(id)
        keyring.invalidate(cancelled.tenant, cancelled.purpose)
        return cancelled
    }

    /// Whether the destruction mark the HSM's list holds for `row`'s version is one `row`'s
    /// approval could have set: a due time its waiting days after a moment of its (MAC'd)
    /// lifetime. Asked from the list, not from `approved_at`, which the service role may clear:
    /// a cancellation that then left the mark would leave the version refused for good (no other
    /// request can be approved while it is marked, and this one cannot be cancelled twice).
    private func mayHaveMarked(_ row: Request) async throws -> Bool {
        guard let days = row.waitingDays, try await authenticator.isAuthenticRequest(row, pool: keyring.pool) else { return false }
        let entry = KeyStateAnchor.Entry(tenant: row.tenant, purpose: row.purpose, version: row.version)
        guard let due = try await keyring.anchoredStates(fresh: true).scheduled[entry] else { return false }
        let wait = Int64(days) * 86_400, seconds = { (date: Date) in Int64(date.timeIntervalSince1970.rounded(.down)) }
        return (seconds(row.requestedAt) + wait ... seconds(row.expiresAt) + wait).contains(due)
    }

    /// Carries out every scheduled destruction that is due (the periodic sweep of `custos
    /// serve`), under the same rules as ``execute(_:officer:waitingPeriod:)``. A request that
    /// cannot be carried out yet (its version still referenced, say) stays scheduled and is
    /// tried again by the next sweep.
    /// - Returns: the requests carried out, and those refused with why.
    public func sweep(officer: String, waitingPeriod: Duration) async throws -> (executed: [Request], refused: [(Request, any Error)]) {
        let at = now()
        let scheduled = try await custody {
            try await database.withTransaction(context: "find due key destructions") { connection in
                try await DestructionRequestStore.scheduled(on: connection)
            }
        }
        var executed = [Request](), refused = [(Request, any Error)]()
        for row in scheduled where (row.dueAt.map { $0 <= at } ?? false) {
            do {
                executed.append(try await execute(row.id, officer: officer, waitingPeriod: waitingPeriod))
            } catch DestructionApprovalError.alreadyExecuted {
                continue  // another instance's sweep (or an officer) was first
            } catch DestructionApprovalError.inProgress {
                // Another call holds the request now; if it does not finish, the next sweep
                // tries again. Said, so that a request held for good (a transaction left open)
                // shows up.
                keyring.logger.notice("scheduled key destruction held by another call; left for the next sweep", metadata: [
                    "request": "\(row.id.uuidString.lowercased())",
                ])
            } catch {
                refused.append((row, error))
            }
        }
        return (executed, refused)
    }

    /// Runs ``sweep(officer:waitingPeriod:)`` every `interval` until cancelled (`custos serve`).
    public func runScheduledDestructions(every interval: Duration, waitingPeriod: Duration) async {
        while !Task.isCancelled {
            do {
                let (executed, refused) = try await sweep(officer: "system:destruction-sweep", waitingPeriod: waitingPeriod)
                if !executed.isEmpty { keyring.logger.notice("carried out scheduled key destructions", metadata: ["count": "\(executed.count)"]) }
                for (row, error) in refused {
                    keyring.logger.warning("scheduled key destruction not carried out; retrying at the next sweep", metadata: [
                        "request": "\(row.id.uuidString.lowercased())", "error": "\(error)",
                    ])
                }
            } catch {
                if !Task.isCancelled { keyring.logger.warning("scheduled key destruction sweep failed", metadata: ["error": "\(error)"]) }
            }
            try? await Task.sleep(for: interval)
        }
    }

    /// Carries out an approved, unexpired request once: the request row stays locked (`FOR
    /// UPDATE`) from the checks until it is marked carried out, so a second execution meanwhile
    /// is refused (``DestructionApprovalError/inProgress(_:)``), and one after finds it done.
    /// Needs a second database connection meanwhile (the keyring's own): see
    /// ``Database/withNestingTransaction(context:_:)``.
    /// - Throws: ``DestructionApprovalError``; ``CustodyError`` from the keyring's rules.
    public func execute(_ id: UUID, officer: String, waitingPeriod: Duration) async throws -> Request {
        let at = now()
        let keyring = self.keyring, authenticator = self.authenticator, hook = executionHook
        let pool = keyring.pool
        try await custody {
            // The keyring works in transactions of its own while this one holds the request's row.
            try await database.withNestingTransaction(context: "carry out key destruction") { connection in
                let row = try await Self.lock(id, on: connection)
                guard row.executedAt == nil else { throw DestructionApprovalError.alreadyExecuted(id) }
                guard row.cancelledAt == nil else { throw DestructionApprovalError.cancelled(id) }
                guard row.approvedBy != nil else { throw DestructionApprovalError.notApproved(id) }
                // A scheduled request is carried out once due (its expiry bounds only the
                // approval); one from before scheduling existed, before it expires.
                if let due = row.dueAt {
                    guard at >= due else { throw DestructionApprovalError.notDue(id, due: due) }
                } else {
                    guard at < row.expiresAt else { throw DestructionApprovalError.expired(id) }
                }
                guard try await authenticator.isAuthentic(row, pool: pool) else { throw DestructionApprovalError.approvalNotAuthentic(id) }
                if let serial = row.approverCertificateSerial, try await CertificateRevocationStore.all(on: connection).contains(serial) {
                    throw DestructionApprovalError.approverRevoked(id)
                }
                // The cancellation is not under the approval's MAC, but the version's mark is on
                // the HSM's list: a scheduled request counts only while the list still carries
                // the due time its approval set (a database write un-cancelling the request, even
                // with the key row put back from while it was scheduled, leaves it unmarked).
                if let due = row.dueAt, try await !keyring.isScheduledForDestruction(row.tenant, row.purpose, version: row.version, due: due) {
                    throw DestructionApprovalError.notScheduled(id)
                }
                try await hook?(id)
                do {
                    try await keyring.destroy(row.tenant, row.purpose, version: row.version, waitingPeriod: waitingPeriod, actor: officer)
                } catch CustodyError.invalidTransition(_, _, _, let from, _) where from == .destroyed {
                    // Destroyed by an earlier run that stopped (crashed) before marking the request
                    // carried out: its key step is done, so this run only records it.
                }
                try await DestructionRequestStore.markExecuted(id, at: at, on: connection)
            }
        }
        return try await get(id)
    }

    /// The request's row, locked until the transaction ends. Another call holding it (an
    /// approval, a cancellation, an execution by an officer or another instance's sweep) is
    /// answered at once rather than waited for: see ``DestructionRequestStore/get(_:forUpdate:on:)``.
    private static func lock(_ id: UUID, on connection: DatabaseTransaction) async throws -> Request {
        do {
            guard let row = try await DestructionRequestStore.get(id, forUpdate: true, on: connection) else { throw DestructionApprovalError.unknown(id) }
            return row
        } catch StorageError.locked {
            throw DestructionApprovalError.inProgress(id)
        }
    }

    public func get(_ id: UUID) async throws -> Request {
        let row = try await custody {
            try await database.withTransaction(context: "read key destruction request") { connection in
                try await DestructionRequestStore.get(id, forUpdate: false, on: connection)
            }
        }
        guard let row else { throw DestructionApprovalError.unknown(id) }
        return row
    }

    private func custody<R: Sendable>(_ body: () async throws -> R) async throws -> R {
        do {
            return try await body()
        } catch let error as StorageError {
            throw CustodyError.storage(error)
        }
    }
}

/// Why a destruction request was refused.
public enum DestructionApprovalError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknown(UUID)
    case approverIsRequester(UUID)
    case alreadyApproved(UUID)
    case notApproved(UUID)
    case alreadyExecuted(UUID)
    case expired(UUID)
    /// The approval's HSM MAC is missing or wrong: it was not made through Custos.
    case approvalNotAuthentic(UUID)
    /// The approver's certificate was revoked after approving: the approval no longer counts.
    case approverRevoked(UUID)
    /// The request was cancelled (`custos key cancel-destroy`).
    case cancelled(UUID)
    /// The request's own HSM MAC is missing or wrong: it was written or changed in the database.
    case requestNotAuthentic(UUID)
    /// The scheduled destruction is not due before `due`.
    case notDue(UUID, due: Date)
    /// The waiting period asked for is outside ``KeyDestructionApprovals/waitingDaysRange``.
    case waitingDaysOutOfRange(Int)
    /// A scheduled request whose version no longer carries its due time (the request was
    /// cancelled, whatever the database row says now).
    case notScheduled(UUID)
    /// Another call is approving, cancelling or carrying out the request right now (it holds
    /// the request's row); try again once it is done.
    case inProgress(UUID)

    public var description: String {
        switch self {
        case .unknown(let id): "no key destruction request \(id.uuidString.lowercased())"
        case .approverIsRequester(let id): "request \(id.uuidString.lowercased()) must be approved by a different officer than the one who made it"
        case .alreadyApproved(let id): "request \(id.uuidString.lowercased()) is already approved"
        case .notApproved(let id): "request \(id.uuidString.lowercased()) has no approval from a second officer yet"
        case .alreadyExecuted(let id): "request \(id.uuidString.lowercased()) was already carried out"
        case .expired(let id): "request \(id.uuidString.lowercased()) has expired; make a new one"
        case .approvalNotAuthentic(let id): "the approval of request \(id.uuidString.lowercased()) fails its integrity check; it does not count"
        case .approverRevoked(let id): "the officer who approved request \(id.uuidString.lowercased()) has had their certificate revoked; another officer must approve it"
        case .cancelled(let id): "request \(id.uuidString.lowercased()) was cancelled"
        case .requestNotAuthentic(let id): "request \(id.uuidString.lowercased()) fails its integrity check (changed or written outside Custos); make a new one"
        case .notDue(let id, let due): "request \(id.uuidString.lowercased()) is scheduled for \(due.formatted(.iso8601)); it cannot be carried out before"
        case .notScheduled(let id):
            "the key version of request \(id.uuidString.lowercased()) is not scheduled for destruction by it (the request was cancelled); make a new one"
        case .inProgress(let id):
            "request \(id.uuidString.lowercased()) is being approved, cancelled or carried out by another call right now; try again"
        case .waitingDaysOutOfRange(let days):
            "waiting period of \(days) days is outside \(KeyDestructionApprovals.waitingDaysRange.lowerBound)–\(KeyDestructionApprovals.waitingDaysRange.upperBound) days"
        }
    }
}

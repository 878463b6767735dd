public import Custody
public import CustosModel
public import Storage
import Synchronization

/// The per-tenant tokenization budget (DESIGN §6), shared by every instance and kept across
/// restarts: the bucket is a PostgreSQL row per tenant (``TokenizationBudgetStore``). An
/// instance leases tokens from it in blocks — one short transaction per block, not per call —
/// and spends them locally. Whatever all instances spend together never exceeds what the shared
/// bucket released (burst + rate × time); a lease an instance does not use within
/// ``leaseLifetime`` is dropped, not returned (the safe direction: it under-spends).
///
/// Each instance also keeps its own bucket per tenant, in memory, and leases no more than it
/// holds: the database's writer can refill the shared row at will (helper-85: five refills,
/// five tokenizations at a budget of one a minute), never this one, so with N instances the
/// PRF oracle stays bounded by N budgets whatever the database says.
///
/// A tenant's own budget (its policy, ``setBudget(_:perMinute:)``) replaces the default.
/// Hitting the budget is audited at most once a minute per tenant, across instances (the time
/// of the last audit is kept in the same row).
public final class TokenizationRateLimiter: Sendable {
    public let defaultBudget: TokenizationBudget
    /// The most tokens one lease takes (a block is also at most a tenth of the burst).
    public let maximumBlock: Int
    public let leaseLifetime: Duration
    let database: Database
    let audit: AuditLog?
    private let leases = Mutex([TenantID: Lease]())
    private let budgets = Mutex([TenantID: TokenizationBudget]())
    /// At most one lease transaction per tenant in flight.
    private let leaseRefreshes = SingleFlight<TenantID, Void>()
    /// This instance's own buckets (seconds since ``origin``), full at a tenant's first lease.
    private let ownBuckets = Mutex([TenantID: TokenBucket]())
    private let origin = ContinuousClock.now

    struct Lease {
        var tokens = 0
        var until: ContinuousClock.Instant
        /// After a refusal: refuse locally until then, without asking the database again (an
        /// attacker's flood must not become a flood of transactions).
        var refusedUntil: ContinuousClock.Instant?
    }

    public init(
        database: Database, defaultBudget: TokenizationBudget, audit: AuditLog?, maximumBlock: Int = 1_000,
        leaseLifetime: Duration = .seconds(10)
    ) {
        self.database = database
        self.defaultBudget = defaultBudget
        self.audit = audit
        self.maximumBlock = max(1, maximumBlock)
        self.leaseLifetime = leaseLifetime
    }

    /// Sets `tenant`'s budget: `perMinute` sustained, bursts of up to 5 seconds' worth.
    public func setBudget(_ tenant: TenantID, perMinute: Int) {
        setBudget(tenant, TokenizationBudget(perMinute: perMinute))
    }

    public func setBudget(_ tenant: TenantID, _ budget: TokenizationBudget) {
        budgets.withLock { $0[tenant] = budget }
    }

    /// The tokens one lease asks for under `budget`: a tenth of the burst (so several
    /// instances can share a burst), at least one, at most ``maximumBlock``.
    public func blockSize(_ budget: TokenizationBudget) -> Int {
        max(1, min(maximumBlock, Int((budget.burst / 10).rounded(.down))))
    }

    /// Returns one tokenization taken by ``acquire(_:)`` and never used (the call was refused
    /// before it tokenized) to this instance's lease. Dropped when the lease has expired
    /// meanwhile: the safe direction, as for any unused lease.
    public func giveBack(_ tenant: TenantID) {
        let now = ContinuousClock.now
        leases.withLock { leases in
            guard var lease = leases[tenant], now < lease.until else { return }
            lease.tokens += 1
            leases[tenant] = lease
        }
    }

    /// Takes one tokenization from `tenant`'s budget.
    /// - Throws: ``TokenizationError/rateLimited(_:)`` when the budget is spent;
    ///   ``StorageError`` when the shared bucket cannot be read.
    public func acquire(_ tenant: TenantID) async throws {
        // Each round either takes a token from the local lease, or leases a block (which takes
        // at least one token from the shared bucket or refuses): callers that drained a block
        // between its lease and their turn lease again, and the shared budget bounds the rounds.
        while true {
            if try takeLocally(tenant) { return }
            // Callers that find the lease spent at once wait for one lease transaction: each
            // used to run its own, queueing on the bucket's row lock with a pool connection
            // held (66 ms on average under the RPC benchmark) and leasing a block apiece.
            try await leaseRefreshes.run(tenant) { try await self.lease(tenant) }
        }
    }

    /// One token from the lease, if it holds one (`true`); throws while a refusal stands.
    private func takeLocally(_ tenant: TenantID) throws -> Bool {
        let now = ContinuousClock.now
        let local = leases.withLock { leases -> Bool? in
            guard var lease = leases[tenant] else { return nil }
            if let refused = lease.refusedUntil, now < refused { return false }
            guard lease.tokens > 0, now < lease.until else { return nil }
            lease.tokens -= 1
            leases[tenant] = lease
            return true
        }
        guard let local else { return false }
        if local { return true }
        throw TokenizationError.rateLimited(tenant)
    }

    /// Leases a block from the shared bucket into this instance's lease, or records the refusal
    /// (audited at most once a minute per tenant) for ``takeLocally(_:)`` to report.
    private func lease(_ tenant: TenantID) async throws {
        let budget = budgets.withLock { $0[tenant] } ?? defaultBudget
        let elapsed = ContinuousClock.now - origin
        let now = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let own = ownBuckets.withLock { buckets -> TokenBucket in
            var bucket = buckets[tenant] ?? TokenBucket(tokens: budget.burst, at: now)
            bucket.refill(to: now, budget: budget)
            buckets[tenant] = bucket
            return bucket
        }
        let block = min(blockSize(budget), Int(own.tokens.rounded(.down)))
        let (shared, sharedWait, auditDue) = try await database.withTenant(tenant, context: "lease tokenization budget") { connection in
            let row = try await TokenizationBudgetStore.lock(tenant: tenant, burst: budget.burst, on: connection)
            var bucket = TokenBucket(tokens: row.tokens, at: row.refilledAt)
            bucket.refill(to: row.now, budget: budget)
            let granted = bucket.take(upTo: block)
            let auditDue = granted == 0 && (row.refusalAuditedAt.map { row.now - $0 >= 60 } ?? true)
            try await TokenizationBudgetStore.update(
                tenant: tenant, tokens: bucket.tokens, refilledAt: bucket.at,
                refusalAuditedAt: auditDue ? row.now : row.refusalAuditedAt, on: connection
            )
            return (granted, bucket.secondsUntilNextToken(budget), auditDue)
        }
        let granted = ownBuckets.withLock { $0[tenant]?.take(upTo: shared) } ?? 0
        let wait = max(sharedWait, own.secondsUntilNextToken(budget))
        let leasedAt = ContinuousClock.now
        leases.withLock { leases in
            var lease = leases[tenant] ?? Lease(until: leasedAt + leaseLifetime)
            if leasedAt >= lease.until { lease.tokens = 0 }
            if granted > 0 {
                // The waiting callers take theirs from here; the rest joins what is left.
                lease.tokens += granted
                lease.until = leasedAt + leaseLifetime
                lease.refusedUntil = nil
            } else {
                // At most a second, so a raised budget takes effect quickly; at least a
                // millisecond, so the callers waiting for this lease are refused, not sent to
                // lease again.
                lease.refusedUntil = leasedAt + .milliseconds(max(1, Int(min(1, wait) * 1000)))
            }
            leases[tenant] = lease
        }
        guard granted == 0, auditDue, let audit else { return }
        try await audit.append(
            tenant: tenant, actor: "custos", action: .tokenizationRateLimited, target: tenant.rawValue,
            details: ["per_second": "\(budget.perSecond)", "burst": "\(budget.burst)"]
        )
    }
}

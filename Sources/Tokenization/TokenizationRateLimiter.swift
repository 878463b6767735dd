public import Custody
public import CustosModel
import Synchronization

/// A per-tenant token bucket for tokenizations: `perSecond` sustained, `burst` at once (a
/// tenant's own budget, from its policy, replaces the default). Hitting it is audited (at most
/// once a minute per tenant, so an attack does not flood the log).
public final class TokenizationRateLimiter: Sendable {
    public let perSecond: Double
    public let burst: Double
    let audit: AuditLog?
    let clock: @Sendable () -> Double
    private let buckets = Mutex([TenantID: (tokens: Double, at: Double, lastAudit: Double)]())
    private let budgets = Mutex([TenantID: (perSecond: Double, burst: Double)]())

    /// - Parameter clock: seconds on a monotonic scale (injectable for tests; default: the
    ///   continuous clock).
    public init(perSecond: Double, burst: Double, audit: AuditLog?, clock: (@Sendable () -> Double)? = nil) {
        self.perSecond = perSecond
        self.burst = burst
        self.audit = audit
        let origin = ContinuousClock.now
        self.clock = clock ?? {
            let elapsed = ContinuousClock.now - origin
            return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        }
    }

    /// Sets `tenant`'s budget: `perMinute` sustained, bursts of up to 5 seconds' worth.
    public func setBudget(_ tenant: TenantID, perMinute: Int) {
        let perSecond = Double(perMinute) / 60
        let budget = (perSecond: perSecond, burst: max(1, (perSecond * 5).rounded(.down)))
        budgets.withLock { budgets in
            if budgets[tenant]?.perSecond != budget.perSecond { budgets[tenant] = budget }
        }
    }

    /// Takes one tokenization from `tenant`'s bucket, if there is one.
    public func allow(_ tenant: TenantID) -> Bool {
        let now = clock()
        let (perSecond, burst) = budgets.withLock { $0[tenant] } ?? (self.perSecond, self.burst)
        return buckets.withLock { buckets in
            var bucket = buckets[tenant] ?? (burst, now, -.infinity)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * perSecond)
            bucket.at = now
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[tenant] = bucket
            return allowed
        }
    }

    /// Audits a refusal, at most once a minute per tenant.
    func recordRefusal(_ tenant: TenantID) async throws {
        let now = clock()
        let due = buckets.withLock { buckets -> Bool in
            guard var bucket = buckets[tenant], now - bucket.lastAudit >= 60 else { return false }
            bucket.lastAudit = now
            buckets[tenant] = bucket
            return true
        }
        guard due, let audit else { return }
        let (perSecond, burst) = budgets.withLock { $0[tenant] } ?? (self.perSecond, self.burst)
        try await audit.append(
            tenant: tenant, actor: "custos", action: "tokenization.rate_limited", target: tenant.rawValue,
            details: ["per_second": "\(perSecond)", "burst": "\(burst)"]
        )
    }
}

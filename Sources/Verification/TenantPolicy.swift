public import CustosModel
import Foundation
public import Storage
import Synchronization

/// What a tenant decides for itself: decision thresholds, how long fingerprints stay without
/// activity, and its tokenization budget.
public struct TenantPolicy: Sendable, Hashable, Codable {
    public let thresholds: DecisionThresholds
    /// Days without activity after which a fingerprint is deleted.
    public let retentionDays: Int
    /// Tokenizations a minute, sustained (bursts of up to 5 seconds' worth).
    public let tokenizationsPerMinute: Int

    /// 6,000 tokenizations a minute (100/s, bursts of 500): the tokenization PRF and the
    /// decisions behind it are an oracle (a codebook, or hill-climbing towards an enrolled face),
    /// so the default is a hundredth of what it was (600,000), still far above one check per
    /// candidate for any hiring pipeline; a tenant that needs more raises it (audited).
    public static let `default` = TenantPolicy(unchecked: .default, retentionDays: 90, tokenizationsPerMinute: 6_000)

    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` naming the field out of range.
    public init(green: Double, amber: Double, retentionDays: Int, tokenizationsPerMinute: Int) throws {
        guard green.isFinite, amber.isFinite, let thresholds = DecisionThresholds(green: green, amber: amber) else {
            throw VerificationError.invalidArgument(field: "thresholds", reason: "need 0 < amber < green ≤ 1")
        }
        guard (1...3650).contains(retentionDays) else {
            throw VerificationError.invalidArgument(field: "retention_days", reason: "between 1 and 3650")
        }
        guard (1...1_000_000).contains(tokenizationsPerMinute) else {
            throw VerificationError.invalidArgument(field: "tokenizations_per_minute", reason: "between 1 and 1000000")
        }
        self.init(unchecked: thresholds, retentionDays: retentionDays, tokenizationsPerMinute: tokenizationsPerMinute)
    }

    private init(unchecked thresholds: DecisionThresholds, retentionDays: Int, tokenizationsPerMinute: Int) {
        self.thresholds = thresholds
        self.retentionDays = retentionDays
        self.tokenizationsPerMinute = tokenizationsPerMinute
    }

    init(_ row: TenantPolicyStore.Row) {
        self.init(
            unchecked: DecisionThresholds(green: row.green, amber: row.amber) ?? .default,
            retentionDays: row.retentionDays, tokenizationsPerMinute: row.tokenizationsPerMinute
        )
    }
}

/// Tenants' policies, read from `tenant_policies` and cached for `cacheLifetime` (a change made
/// on another instance applies here within that time).
public final class TenantPolicies: Sendable {
    let database: Database
    let audit: (any AuditRecording)?
    public let cacheLifetime: Duration
    private let cache = Mutex([TenantID: (policy: TenantPolicy, until: ContinuousClock.Instant)]())

    /// How long a policy read is reused by default: a change made on another instance applies
    /// here within it.
    public static let defaultCacheLifetime: Duration = .seconds(5)

    public init(database: Database, audit: (any AuditRecording)?, cacheLifetime: Duration = TenantPolicies.defaultCacheLifetime) {
        self.database = database
        self.audit = audit
        self.cacheLifetime = cacheLifetime
    }

    public func policy(_ tenant: TenantID) async throws -> TenantPolicy {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[tenant] }), cached.until > now { return cached.policy }
        let row = try await database.withTenant(tenant, context: "read tenant policy") { connection in
            try await TenantPolicyStore.get(on: connection)
        }
        let policy = row.map(TenantPolicy.init) ?? .default
        cache.withLock { $0[tenant] = (policy, now + cacheLifetime) }
        return policy
    }

    /// Stores the tenant's policy (audited).
    public func set(_ policy: TenantPolicy, for tenant: TenantID, actor: String) async throws {
        let row = TenantPolicyStore.Row(
            green: policy.thresholds.green, amber: policy.thresholds.amber,
            retentionDays: policy.retentionDays, tokenizationsPerMinute: policy.tokenizationsPerMinute
        )
        let audit = audit
        try await database.withTenant(tenant, context: "set tenant policy") { connection in
            try await TenantPolicyStore.put(row, tenant: tenant, on: connection)
            try await audit?.record(tenant: tenant, actor: actor, action: .tenantPolicy, target: tenant.rawValue, details: [
                "green": "\(policy.thresholds.green)", "amber": "\(policy.thresholds.amber)",
                "retention_days": "\(policy.retentionDays)", "tokenizations_per_minute": "\(policy.tokenizationsPerMinute)",
            ], on: connection)
        }
        cache.withLock { $0[tenant] = nil }
    }
}

public import CustosModel
import Foundation
public import Storage
import Synchronization

/// What a tenant decides for itself: decision thresholds, how long fingerprints stay without
/// activity, and its tokenization budget.
public struct TenantPolicy: Sendable, Hashable, Codable {
    /// The tenant's thresholds as it set them, fractions of matching positions of tokens of
    /// ``thresholdsFormat`` (without one: the compact defaults). Decide with ``thresholds(for:)``.
    public let thresholds: DecisionThresholds
    /// The token format ``thresholds`` were set for: the format of the tenant's active biometric
    /// version when they were set (what it calibrates on), recorded by ``TenantPolicies``; nil
    /// when the tenant never set them.
    public let thresholdsFormat: BiometricTokenFormat?
    /// Days without activity after which a fingerprint is deleted.
    public let retentionDays: Int
    /// Tokenizations a minute, sustained (bursts of up to 5 seconds' worth).
    public let tokenizationsPerMinute: Int
    /// Days the previous biometric key version keeps matching after a rotation, so enrolled
    /// subjects migrate on their next GREEN verification (0 to 365; 0: the old templates stop
    /// matching at once and subjects re-enrol, the behaviour before overlaps existed).
    public let bioOverlapDays: Int

    /// The widest overlap: a year covers subjects verified about once a year, and bounds how
    /// long a superseded (perhaps suspected) biometric key keeps matching.
    public static let bioOverlapDaysRange = 0...365
    /// Fingerprints kept without activity: a day to ten years.
    public static let retentionDaysRange = 1...3650
    /// The tokenization budget a tenant may be given (DESIGN §6's rate limit).
    public static let tokenizationsPerMinuteRange = 1...1_000_000

    /// 6,000 tokenizations a minute (100/s, bursts of 500): the tokenization PRF and the
    /// decisions behind it are an oracle (a codebook, or hill-climbing towards an enrolled face),
    /// so the default is a hundredth of what it was (600,000), still far above one check per
    /// candidate for any hiring pipeline; a tenant that needs more raises it (audited).
    public static let `default` = TenantPolicy(
        unchecked: .default(for: .compact), retentionDays: 90, tokenizationsPerMinute: 6_000, bioOverlapDays: TenantPolicyStore.defaultBioOverlapDays,
        thresholdsFormat: nil
    )

    /// The thresholds that decide comparisons of `format`'s tokens: the tenant's own when they
    /// were set for a format of the same shape (m positions of q symbols: wide and compact share
    /// one, their scores differ by under 0.004), else `format`'s defaults, derived from the same
    /// target FMRs. A fraction set for one shape applied to another would be meaningless, and
    /// dangerous: 0.17, a GREEN on compact scores, is below every quaternary impostor (≈ 0.44).
    /// So during a rotation's overlap from compact to quaternary, the version the tenant did not
    /// calibrate on decides with its defaults until the tenant sets thresholds for it.
    public func thresholds(for format: BiometricTokenFormat) -> DecisionThresholds {
        ownThresholds(for: format) ? thresholds : .default(for: format)
    }

    /// Whether ``thresholds(for:)`` of `format` is the tenant's own pair (set for a format of
    /// the same shape) rather than `format`'s defaults.
    public func ownThresholds(for format: BiometricTokenFormat) -> Bool {
        guard let calibrated = thresholdsFormat else { return false }
        return calibrated.positions == format.positions && calibrated.shape.symbolsPerPosition == format.shape.symbolsPerPosition
    }

    /// This policy with `thresholds`, recorded as set for `format`.
    func with(thresholds: DecisionThresholds, setFor format: BiometricTokenFormat?) -> TenantPolicy {
        TenantPolicy(
            unchecked: thresholds, retentionDays: retentionDays, tokenizationsPerMinute: tokenizationsPerMinute,
            bioOverlapDays: bioOverlapDays, thresholdsFormat: format
        )
    }

    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` naming the field out of range.
    public init(
        green: Double, amber: Double, retentionDays: Int, tokenizationsPerMinute: Int,
        bioOverlapDays: Int = TenantPolicyStore.defaultBioOverlapDays
    ) throws {
        guard green.isFinite, amber.isFinite, let thresholds = DecisionThresholds(green: green, amber: amber) else {
            throw VerificationError.invalidArgument(field: "thresholds", reason: "need 0 < amber < green ≤ 1")
        }
        guard Self.retentionDaysRange.contains(retentionDays) else {
            throw VerificationError.invalidArgument(field: "retention_days", reason: "between 1 and 3650")
        }
        guard Self.tokenizationsPerMinuteRange.contains(tokenizationsPerMinute) else {
            throw VerificationError.invalidArgument(field: "tokenizations_per_minute", reason: "between 1 and 1000000")
        }
        guard Self.bioOverlapDaysRange.contains(bioOverlapDays) else {
            throw VerificationError.invalidArgument(field: "bio_overlap_days", reason: "between 0 and 365")
        }
        // Which format these are for is recorded when they are stored (``TenantPolicies``).
        self.init(
            unchecked: thresholds, retentionDays: retentionDays, tokenizationsPerMinute: tokenizationsPerMinute, bioOverlapDays: bioOverlapDays,
            thresholdsFormat: nil
        )
    }

    private init(
        unchecked thresholds: DecisionThresholds, retentionDays: Int, tokenizationsPerMinute: Int, bioOverlapDays: Int,
        thresholdsFormat: BiometricTokenFormat?
    ) {
        self.thresholds = thresholds
        self.thresholdsFormat = thresholdsFormat
        self.retentionDays = retentionDays
        self.tokenizationsPerMinute = tokenizationsPerMinute
        self.bioOverlapDays = bioOverlapDays
    }

    /// The fields a partial update sets; `nil` keeps the stored value.
    public struct Changes: Sendable, Hashable {
        public var green: Double?
        public var amber: Double?
        public var retentionDays: Int?
        public var tokenizationsPerMinute: Int?
        public var bioOverlapDays: Int?

        public init(
            green: Double? = nil, amber: Double? = nil, retentionDays: Int? = nil, tokenizationsPerMinute: Int? = nil, bioOverlapDays: Int? = nil
        ) {
            self.green = green
            self.amber = amber
            self.retentionDays = retentionDays
            self.tokenizationsPerMinute = tokenizationsPerMinute
            self.bioOverlapDays = bioOverlapDays
        }

        public var isEmpty: Bool { self == Changes() }

        /// Every field set: nothing of the stored policy is kept.
        public var setsEveryField: Bool {
            green != nil && amber != nil && retentionDays != nil && tokenizationsPerMinute != nil && bioOverlapDays != nil
        }
    }

    /// This policy with `changes` applied, checked as a whole (a new amber must stay below the
    /// stored green). The thresholds' format stays; ``TenantPolicies`` records a new one when
    /// the changes set a threshold.
    /// - Throws: ``VerificationError/invalidArgument(field:reason:)``.
    public func applying(_ changes: Changes) throws -> TenantPolicy {
        let changed = try TenantPolicy(
            green: changes.green ?? thresholds.green, amber: changes.amber ?? thresholds.amber,
            retentionDays: changes.retentionDays ?? retentionDays, tokenizationsPerMinute: changes.tokenizationsPerMinute ?? tokenizationsPerMinute,
            bioOverlapDays: changes.bioOverlapDays ?? bioOverlapDays
        )
        return changed.with(thresholds: changed.thresholds, setFor: thresholdsFormat)
    }

    /// Whether `changes` set a threshold.
    static func setsThresholds(_ changes: Changes) -> Bool { changes.green != nil || changes.amber != nil }

    init(_ row: TenantPolicyStore.Row) {
        self.init(
            unchecked: DecisionThresholds(green: row.green, amber: row.amber) ?? .default(for: .compact),
            retentionDays: row.retentionDays, tokenizationsPerMinute: row.tokenizationsPerMinute, bioOverlapDays: row.bioOverlapDays,
            thresholdsFormat: row.thresholdsFormat
        )
    }
}

/// Tenants' policies, read from `tenant_policies` and cached for `cacheLifetime` while the
/// cache-change listener is connected (a change made on any instance is announced on commit and
/// forgotten here at once), for at most ``CacheChangeListener/unlistenedLifetime`` while not.
public final class TenantPolicies: Sendable {
    let database: Database
    let audit: (any AuditRecording)?
    public let cacheLifetime: Duration
    let changes: CacheChangeListener?
    private let cache = Mutex([TenantID: (policy: TenantPolicy, until: ContinuousClock.Instant)]())
    /// Bumped by every change made here: a caller after one never joins a read begun before it.
    private let generation = Atomic<UInt64>(0)
    /// One read per expired entry, however many callers find it expired at once.
    private let refreshes = SingleFlight<String, TenantPolicy>()

    /// How long a policy read is reused by default while the cache-change listener is
    /// connected: a bound for a notice that never arrives.
    public static let defaultCacheLifetime: Duration = .seconds(5)

    /// - Parameter changes: the listener that reports other instances' changes; without one
    ///   (one-shot commands, unit tests) a policy is reused for `cacheLifetime` as given.
    public init(
        database: Database, audit: (any AuditRecording)?, cacheLifetime: Duration = TenantPolicies.defaultCacheLifetime,
        changes: CacheChangeListener? = nil
    ) {
        self.database = database
        self.audit = audit
        self.cacheLifetime = cacheLifetime
        self.changes = changes
        changes?.subscribe { [weak self] change in self?.forget(change) }
    }

    /// Forgets the policy a change names; `nil`: every policy.
    func forget(_ change: CacheChange?) {
        switch change {
        case .tenantPolicy(let tenant): _ = cache.withLock { $0.removeValue(forKey: tenant) }
        case .certificateRevocations, .tenantStatus: break
        case nil: cache.withLock { $0.removeAll() }
        }
    }

    /// Which changes a read has seen: this instance's and, with a listener, the notices of all.
    private var cacheStamp: String { "\(generation.load(ordering: .acquiring)).\(changes?.generation ?? 0)" }

    public func policy(_ tenant: TenantID) async throws -> TenantPolicy {
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[tenant] }), cached.until > now { return cached.policy }
        let stamp = cacheStamp
        return try await refreshes.run("\(tenant.rawValue)#\(stamp)") {
            let audit = self.audit
            let row = try await self.database.withTenant(tenant, context: "read tenant policy") { connection in
                try await Self.attestedRow(tenant, audit: audit, on: connection)
            }
            let policy = row.map(TenantPolicy.init) ?? .default
            // A change announced while this read ran may not be in it: use it, do not keep it.
            // Checked under the lock `forget` takes after each bump, or a notice between the
            // check and the store would leave the old policy cached for its whole lifetime.
            self.cache.withLock { cache in
                if self.cacheStamp == stamp { cache[tenant] = (policy, now + (self.changes?.lifetime(self.cacheLifetime) ?? self.cacheLifetime)) }
            }
            return policy
        }
    }

    /// Stores the tenant's whole policy (audited); its thresholds are recorded as set for the
    /// format of the tenant's active biometric version. A policy row the database's writer wrote
    /// or changed (``RecordIntegrityError/tenantPolicy(_:)``) is replaced: nothing of it is kept.
    /// - Returns: the policy now stored (its thresholds recorded with their format).
    @discardableResult
    public func set(_ policy: TenantPolicy, for tenant: TenantID, actor: String) async throws -> TenantPolicy {
        try await change(tenant, actor: actor, setsThresholds: true, replacesAll: true) { stored in
            policy.with(thresholds: policy.thresholds, setFor: stored.thresholdsFormat)
        }
    }

    /// Changes only the fields `changes` sets, on the stored policy (or the default), in one
    /// transaction that no other change of this tenant's policy interleaves with (audited).
    /// - Returns: the policy now stored.
    /// - Throws: ``VerificationError/invalidArgument(field:reason:)`` when the result is out of
    ///   range (nothing is written); ``RecordIntegrityError/tenantPolicy(_:)`` when the stored
    ///   policy is not the audited one and `changes` leave a field to it (its fields would
    ///   otherwise be carried into a genuine entry): ``set(_:for:actor:)``, or changes that set
    ///   every field, replace it.
    public func update(_ changes: TenantPolicy.Changes, for tenant: TenantID, actor: String) async throws -> TenantPolicy {
        try await change(tenant, actor: actor, setsThresholds: TenantPolicy.setsThresholds(changes), replacesAll: changes.setsEveryField) {
            try $0.applying(changes)
        }
    }

    /// `tenant`'s policy row (nil: none), once its newest authentic `tenant.policy` audit entry
    /// records it (``TenantPolicyStore/isAttested(_:by:)``). Without an audit port (one-shot
    /// commands, unit tests) the row as read.
    /// - Throws: ``RecordIntegrityError/tenantPolicy(_:)``.
    static func attestedRow(_ tenant: TenantID, audit: (any AuditRecording)?, on connection: DatabaseTransaction) async throws -> TenantPolicyStore.Row? {
        guard let audit else { return try await TenantPolicyStore.get(on: connection) }
        // The row and the entries are two statements, each with its own snapshot: a change that
        // commits between them shows the old row with the new entry. Read again once; a change
        // holds the tenant's policy lock, so a reader that takes it meets none in progress.
        for attempt in 0..<2 {
            if attempt > 0 { try await TenantPolicyStore.lockForChange(tenant: tenant, on: connection) }
            let row = try await TenantPolicyStore.get(on: connection)
            if TenantPolicyStore.isAttested(row, by: try await audit.newestAuthenticEntry(action: .tenantPolicy, tenant: tenant, on: connection)) {
                return row
            }
        }
        throw RecordIntegrityError.tenantPolicy(tenant)
    }

    /// The format of the tenant's active biometric version (a version that records none is
    /// wide; a tenant without one yet will get the default): what a tenant setting thresholds
    /// calibrated on. Read without the row MAC check, as the policy row it goes into has none.
    static func activeBiometricFormat(_ tenant: TenantID, on connection: DatabaseTransaction) async throws -> BiometricTokenFormat {
        guard let active = try await KeyVersionStore.versions(tenant, .bioPRF, on: connection).first(where: { $0.state == .active }) else {
            return .default
        }
        return active.tokenFormat ?? .wide
    }

    private func change(
        _ tenant: TenantID, actor: String, setsThresholds: Bool, replacesAll: Bool, _ make: @escaping @Sendable (TenantPolicy) throws -> TenantPolicy
    ) async throws -> TenantPolicy {
        let audit = audit
        let policy = try await database.withTenant(tenant, context: "set tenant policy") { connection in
            try await TenantPolicyStore.lockForChange(tenant: tenant, on: connection)
            var stored: TenantPolicy
            do {
                stored = try await Self.attestedRow(tenant, audit: audit, on: connection).map(TenantPolicy.init) ?? .default
            } catch RecordIntegrityError.tenantPolicy(_) where replacesAll {
                stored = .default
            }
            let format = setsThresholds ? try await Self.activeBiometricFormat(tenant, on: connection) : nil
            if let format {
                // A threshold the change leaves out keeps the value that decides the active
                // format now (its default, unless the tenant set one for this shape).
                stored = stored.with(thresholds: stored.thresholds(for: format), setFor: format)
            }
            let policy = try make(stored)
            if let format {
                // A pair calibrated on another format's scale (0.17 from compact tokens, on
                // quaternary ones) would let every unrelated face through: refused.
                let unrelated = format.shape.unrelatedScore
                guard policy.thresholds.amber > unrelated else {
                    throw VerificationError.invalidArgument(
                        field: "amber", reason: "above \((unrelated * 1e4).rounded() / 1e4), the score of unrelated faces on the tenant's \(format.name) tokens"
                    )
                }
            }
            let row = TenantPolicyStore.Row(
                green: policy.thresholds.green, amber: policy.thresholds.amber,
                retentionDays: policy.retentionDays, tokenizationsPerMinute: policy.tokenizationsPerMinute,
                bioOverlapDays: policy.bioOverlapDays, thresholdsFormat: policy.thresholdsFormat
            )
            try await TenantPolicyStore.put(row, tenant: tenant, on: connection)
            // Every field: the entry is what later reads check the row against.
            try await audit?.record(tenant: tenant, actor: actor, action: .tenantPolicy, target: tenant.rawValue, details: row.auditDetails, on: connection)
            try await CacheChange.tenantPolicy(tenant).announce(on: connection)
            return policy
        }
        generation.add(1, ordering: .acquiringAndReleasing)
        cache.withLock { $0[tenant] = nil }
        return policy
    }
}

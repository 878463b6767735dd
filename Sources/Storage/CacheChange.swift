public import CustosModel

/// A change to state that instances cache for a few seconds and that no older channel reports
/// (API-key revocations, galleries and key states have channels of their own): told to every
/// instance through ``CacheChangeListener/channel`` so each forgets its copy within a second
/// instead of when its cache lifetime runs out.
public enum CacheChange: Sendable, Hashable {
    /// A client certificate was revoked (the deny-list is cached whole).
    case certificateRevocations
    /// A tenant was disabled or enabled.
    case tenantStatus(TenantID)
    /// A tenant's policy (thresholds, retention, budget, overlap) changed.
    case tenantPolicy(TenantID)

    /// The NOTIFY payload: `certificates`, `tenant/<id>` or `policy/<id>`.
    public var payload: String {
        switch self {
        case .certificateRevocations: "certificates"
        case .tenantStatus(let tenant): "tenant/" + tenant.rawValue
        case .tenantPolicy(let tenant): "policy/" + tenant.rawValue
        }
    }

    /// The change a payload names; `nil` for one this version does not know (a newer
    /// instance's), which listeners treat as "forget everything".
    public init?(payload: String) {
        if payload == "certificates" { self = .certificateRevocations; return }
        let parts = payload.split(separator: "/", maxSplits: 1)
        guard parts.count == 2, let tenant = try? TenantID.parse(String(parts[1])) else { return nil }
        switch parts[0] {
        case "tenant": self = .tenantStatus(tenant)
        case "policy": self = .tenantPolicy(tenant)
        default: return nil
        }
    }

    /// Tells every instance about the change when `connection`'s transaction commits (NOTIFY
    /// is transactional: a rolled-back change is never announced).
    public func announce(on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_notify(\(CacheChangeListener.channel), \(payload))")
    }
}

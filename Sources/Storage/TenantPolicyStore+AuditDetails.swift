import CustosModel

// A policy row carries no MAC of its own: the `tenant.policy` audit entry written in the same
// transaction records every field, under the audit chain's HSM MAC, and the service role can
// add entries but never change or remove one. So the newest authentic entry of a tenant says
// what its row must hold — an older one put back, or a row the database's writer wrote or
// changed (a GREEN threshold of 0.01 would make every impostor GREEN), does not match.
extension TenantPolicyStore.Row {
    /// The fields as the audit entry records them (`Double`'s description reads back exactly).
    public var auditDetails: [String: String] {
        [
            "green": "\(green)", "amber": "\(amber)",
            "thresholds_format": thresholdsFormat?.name ?? Self.noThresholdsFormat,
            "retention_days": "\(retentionDays)", "tokenizations_per_minute": "\(tokenizationsPerMinute)",
            "bio_overlap_days": "\(bioOverlapDays)",
        ]
    }

    static let noThresholdsFormat = "defaults"

    /// The row an entry records; nil when its details are not such a record. Entries written
    /// before `bio_overlap_days` (migration 9) or `thresholds_format` (migration 20) existed
    /// record the values those migrations gave the rows there were: 30 days, and format 2
    /// (compact), the scale every pair was then set on.
    public init?(auditDetails details: [String: String]) {
        guard let green = details["green"].flatMap(Double.init), let amber = details["amber"].flatMap(Double.init),
              let retention = details["retention_days"].flatMap(Int.init),
              let budget = details["tokenizations_per_minute"].flatMap(Int.init) else { return nil }
        let overlap: Int
        if let text = details["bio_overlap_days"] {
            guard let days = Int(text) else { return nil }
            overlap = days
        } else {
            overlap = TenantPolicyStore.defaultBioOverlapDays
        }
        let format: BiometricTokenFormat?
        switch details["thresholds_format"] {
        case nil: format = .compact
        case Self.noThresholdsFormat?: format = nil
        case let name?:
            guard let named = BiometricTokenFormat.allCases.first(where: { $0.name == name }) else { return nil }
            format = named
        }
        self.init(
            green: green, amber: amber, retentionDays: retention, tokenizationsPerMinute: budget, bioOverlapDays: overlap, thresholdsFormat: format
        )
    }
}

extension TenantPolicyStore {
    /// Whether `row` (nil: the tenant has none) is what `newest`, the tenant's newest authentic
    /// `tenant.policy` entry, recorded: no entry and no row, or a row equal to the entry's.
    /// Entries only forged, a row without an entry, an entry without its row: not. An entry
    /// recording the row's removal attests that there is none.
    public static func isAttested(_ row: Row?, by newest: NewestAuditEntry) -> Bool {
        switch newest {
        case .none: row == nil
        case .authentic(let details) where details[removedKey] != nil: row == nil
        case .authentic(let details): row != nil && Row(auditDetails: details) == row
        case .forged: false
        }
    }

    static let removedKey = "removed"

    /// The details of the `tenant.policy` entry that records the row's removal (an offboarding
    /// deleting the tenant's data), written in the deletion's transaction.
    public static func removalAuditDetails(request: String) -> [String: String] {
        [removedKey: "offboarding", "request": request]
    }
}

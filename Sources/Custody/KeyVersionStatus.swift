public import CustosModel
public import Storage

/// One key version and what is still stored under it (`custos key status`): counts only.
public struct KeyVersionStatus: Sendable, Hashable {
    /// State, retiring-until, check value (never material).
    public let record: KeyVersionRecord
    /// Biometric templates made under this version (`bio-seed`/`bio-prf`), or whose subject
    /// reference it made (`pii`).
    public let templates: Int
    /// Sessions whose name or email it sealed (`data`).
    public let sealedRecords: Int
    /// Sessions whose subject reference it made (`pii`).
    public let sessions: Int
    /// Live API keys hashed under it (`apikey-pepper`).
    public let apiKeys: Int
    /// Everything stored that still needs it: what destruction refuses on.
    public let references: Int
    /// Webhook purposes: still signs deliveries (active, or retiring inside its overlap).
    public let signing: Bool

    func with(references: Int) -> KeyVersionStatus {
        KeyVersionStatus(
            record: record, templates: templates, sealedRecords: sealedRecords, sessions: sessions, apiKeys: apiKeys,
            references: references, signing: signing
        )
    }
}

/// How far one purpose has moved to its active version.
public struct KeyPurposeMigration: Sendable, Hashable {
    public let purpose: KeyPurpose
    public let activeVersion: Int?
    /// Stored values needing some version of the purpose (the sum of their references).
    public let storedValues: Int
    public let underActive: Int

    /// 100 × under active / stored; 100 when nothing is stored (nothing left to move).
    public var percentMigrated: Double {
        storedValues == 0 ? 100 : 100 * Double(underActive) / Double(storedValues)
    }
}

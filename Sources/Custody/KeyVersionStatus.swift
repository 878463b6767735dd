public import CustosModel
public import Foundation
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
    /// What the HSM's key-state list says when it refuses this version, whatever ``record``'s
    /// row says; `nil` when the list does not name it. The list is the authority: a row that
    /// disagrees was put back from a backup, changed by a database writer, or its change
    /// stopped between the list write and the commit.
    public let listed: ListedKeyState?

    func with(references: Int, listed: ListedKeyState?) -> KeyVersionStatus {
        KeyVersionStatus(
            record: record, templates: templates, sealedRecords: sealedRecords, sessions: sessions, apiKeys: apiKeys,
            references: references, signing: signing, listed: listed
        )
    }
}

/// Why the HSM's key-state list refuses a version (``AnchoredKeyStates``), the first that
/// applies in the order a use is refused.
public enum ListedKeyState: Sendable, Hashable {
    case destroyed
    case tenantOffboarding
    case disabled
    case destructionScheduled(due: Date)
}

extension AnchoredKeyStates {
    func listed(_ entry: Entry) -> ListedKeyState? {
        if destroyed.contains(entry) { return .destroyed }
        if offboarding.contains(entry.tenant) { return .tenantOffboarding }
        if disabled.contains(entry) { return .disabled }
        if let due = scheduled[entry] { return .destructionScheduled(due: Date(timeIntervalSince1970: Double(due))) }
        return nil
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

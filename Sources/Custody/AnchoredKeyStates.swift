import CustosModel
import Foundation

/// What the HSM's list (``KeyStateAnchor``) says about key versions, whatever their rows say:
/// destroyed (for good: a version number is never reused), disabled (until enabled), awaiting a
/// scheduled destruction (until destroyed or cancelled), tenants whose offboarding two officers
/// approved (for good: every version of theirs is refused and none may be enabled), and disabled
/// tenants (refused as callers while disabled — ``TenantKeyring/isTenantDisabled(_:)`` — but
/// their keys stay usable for officers: a data-protection officer still erases and exports their
/// subjects; `tenants.status` alone, which the service role can write, could be set back to
/// active — helper-71).
struct AnchoredKeyStates: Sendable, Equatable {
    typealias Entry = KeyStateAnchor.Entry

    var destroyed = Set<Entry>()
    var disabled = Set<Entry>()
    /// The due time of each scheduled destruction, in whole seconds since 1970.
    var scheduled = [Entry: Int64]()
    var offboarding = Set<TenantID>()
    var disabledTenants = Set<TenantID>()
    /// Every template and session carries its MAC (migration 33): from now on a row without
    /// one is refused, so a database writer cannot pass a forged row off as one written before
    /// MACs existed. Not rebuilt from the database: start-up sets it again when it finds no
    /// unsealed row.
    var recordsSealed = false

    /// Throws the error a use of `entry` gets when the list forbids it.
    func requireUsable(_ entry: Entry) throws {
        if destroyed.contains(entry) { throw CustodyError.keyDestroyed(entry.tenant, entry.purpose, entry.version) }
        if offboarding.contains(entry.tenant) { throw CustodyError.tenantOffboarding(entry.tenant) }
        if disabled.contains(entry) { throw CustodyError.keyDisabled(entry.tenant, entry.purpose, entry.version) }
        if let due = scheduled[entry] {
            throw CustodyError.keyDestructionScheduled(entry.tenant, entry.purpose, entry.version, due: Date(timeIntervalSince1970: Double(due)))
        }
    }

    /// The highest version of `tenant`'s `purpose` the list names, if any.
    func highestVersion(_ tenant: TenantID, _ purpose: KeyPurpose) -> Int? {
        (destroyed.union(disabled).union(scheduled.keys)).filter { $0.tenant == tenant && $0.purpose == purpose }.map(\.version).max()
    }

    /// A destroyed version is neither disabled nor scheduled any more: it is gone.
    mutating func destroy(_ entry: Entry) {
        destroyed.insert(entry)
        disabled.remove(entry)
        scheduled[entry] = nil
    }

    // MARK: Encoding

    /// One line per fact, sorted (ids and times only, nothing secret):
    /// `destroyed <tenant> <purpose> <version>`, `disabled …`, `scheduled … <due>`, `offboarding <tenant>`,
    /// `tenant-disabled <tenant>` (a build before session 20 skips that line, and drops it when it
    /// writes the list: during a rolling upgrade, disable tenants from upgraded instances),
    /// `records-sealed` (likewise dropped by an older build: the next start sets it again).
    var body: [UInt8] {
        var lines = destroyed.sorted().map { "destroyed \($0)" }
        lines += disabled.sorted().map { "disabled \($0)" }
        lines += scheduled.keys.sorted().map { "scheduled \($0) \(scheduled[$0]!)" }
        lines += offboarding.map(\.rawValue).sorted().map { "offboarding \($0)" }
        lines += disabledTenants.map(\.rawValue).sorted().map { "tenant-disabled \($0)" }
        if recordsSealed { lines.append("records-sealed") }
        return Array(lines.map { $0 + "\n" }.joined().utf8)
    }

    /// Parses a body; a line that does not parse is skipped (the MAC covers the body, so only
    /// custody wrote it).
    init(body: [UInt8]) {
        for line in String(decoding: body, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            if fields == ["records-sealed"] {
                recordsSealed = true
                continue
            }
            if fields.count == 2, fields[0] == "offboarding", let tenant = TenantID(fields[1]) {
                offboarding.insert(tenant)
                continue
            }
            if fields.count == 2, fields[0] == "tenant-disabled", let tenant = TenantID(fields[1]) {
                disabledTenants.insert(tenant)
                continue
            }
            guard fields.count >= 4, let tenant = TenantID(fields[1]), let purpose = KeyPurpose(rawValue: fields[2]),
                  let version = Int(fields[3]) else { continue }
            let entry = Entry(tenant: tenant, purpose: purpose, version: version)
            switch (fields[0], fields.count) {
            case ("destroyed", 4): destroyed.insert(entry)
            case ("disabled", 4): disabled.insert(entry)
            case ("scheduled", 5): if let due = Int64(fields[4]) { scheduled[entry] = due }
            default: continue
            }
        }
    }

    init() {}
}

import CustosModel
public import Foundation

/// Moves a ``KeyUseCounter``'s counts into the audit log: one `key.use` entry per tenant per
/// flush, whose details hold the window and one count per ``KeyUse/detailKey``.
///
/// One entry per tenant, not one per count: every append costs an HSM MAC and an HSM anchor
/// write, and a tenant's entries stay its own (the `tenant` column, for exports per tenant).
/// Each entry is appended in a transaction of its own, as every other entry is: the chain and
/// its anchors stay verifiable whatever fails.
///
/// A flush that cannot write (database or HSM down) puts the counts back for the next flush,
/// merged with what was counted meanwhile: the window of the next entry then starts at the
/// oldest counts it holds (windows of one tenant's consecutive entries may overlap then; a use
/// is never counted twice).
public actor KeyUseRecorder {
    public nonisolated let counter: KeyUseCounter
    let audit: AuditLog
    /// The start of the oldest counts not yet written.
    private var windowStart: Date

    public init(counter: KeyUseCounter, audit: AuditLog, now: Date = Date()) {
        self.counter = counter
        self.audit = audit
        windowStart = now
    }

    /// Writes the counts so far.
    /// - Returns: the number of entries appended (tenants with uses).
    /// - Throws: the audit log's ``CustodyError``; the counts not written are then kept.
    @discardableResult
    public func flush(now: Date = Date()) async throws -> Int {
        let taken = counter.take()
        guard !taken.isEmpty else {
            windowStart = now
            return 0
        }
        var byTenant = [TenantID: [KeyUse: Int64]]()
        for (use, count) in taken { byTenant[use.tenant, default: [:]][use] = count }
        let tenants = byTenant.keys.sorted { $0.rawValue < $1.rawValue }
        let window = ["window_start": Self.timestamp(windowStart), "window_end": Self.timestamp(now)]
        for (index, tenant) in tenants.enumerated() {
            let uses = byTenant[tenant] ?? [:]
            var details = window
            for (use, count) in uses { details[use.detailKey] = String(count) }
            do {
                try await audit.append(tenant: tenant, actor: Self.actor, action: .keyUse, target: Self.target, details: details)
            } catch {
                // This tenant's counts and those of the tenants not reached yet wait for the
                // next flush; the window start stays where it was.
                var kept = [KeyUse: Int64]()
                for remaining in tenants[index...] { kept.merge(byTenant[remaining] ?? [:]) { $0 + $1 } }
                counter.restore(kept)
                throw error
            }
        }
        windowStart = now
        return tenants.count
    }

    /// The actor and target of `key.use` entries.
    public static let actor = "custos"
    public static let target = "keys"

    /// RFC 3339 UTC with milliseconds.
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

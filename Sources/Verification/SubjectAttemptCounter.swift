import CustosModel
import Foundation
import Synchronization

/// This instance's own count of each subject's 1:1 verifications in its current window, beside
/// the shared counter in PostgreSQL (`verification_attempts`), which the service role may reset
/// or delete: with the database's writer a hostile tenant had as many decisions about one
/// subject as it asked for (helper-85). Held in memory, which the writer cannot reach: with N
/// instances a subject gets at most N limits' worth per window.
///
/// An attempt is reserved before the features are tokenized and given back only when its
/// decision is known not to have been recorded: counting after the write let every call in
/// flight pass, and a call cancelled while its write still committed was never counted
/// (helper-87).
final class SubjectAttemptCounter: Sendable {
    let limit: VerificationAttemptLimit
    /// Subjects held at most. Past it, windows that are over go first, then those with the
    /// fewest attempts (a tenant filling the map with fresh subjects does not push out the one
    /// it is probing); a subject dropped has the shared counter alone until its next attempt.
    let capacity: Int
    private let windows = Mutex([String: Window]())

    struct Window {
        var start: Date
        var attempts: Int
    }

    init(limit: VerificationAttemptLimit, capacity: Int = 200_000) {
        self.limit = limit
        self.capacity = max(2, capacity)
    }

    private var seconds: Double { Double(limit.window.components.seconds) }

    /// The key of `subject` (a reference) of `tenant`.
    static func key(_ tenant: TenantID, _ subject: SubjectReference) -> String {
        tenant.rawValue + "/" + subject.value
    }

    /// Takes one attempt of `key`'s window at `now`.
    /// - Throws: the limit's refusal (nothing taken) when the window's attempts are used up.
    func reserve(_ key: String, now: Date) throws {
        let refusedSince = windows.withLock { windows -> Date? in
            if var window = windows[key], now.timeIntervalSince(window.start) < seconds {
                guard window.attempts < limit.attempts else { return window.start }
                window.attempts += 1
                windows[key] = window
                return nil
            }
            if windows[key] == nil, windows.count >= capacity { drop(from: &windows, now: now) }
            windows[key] = Window(start: now, attempts: 1)
            return nil
        }
        if let refusedSince { throw limit.refusal(windowStart: refusedSince) }
    }

    /// Gives back an attempt ``reserve(_:now:)`` took whose decision was not recorded.
    func release(_ key: String) {
        windows.withLock { windows in
            guard var window = windows[key], window.attempts > 0 else { return }
            window.attempts -= 1
            windows[key] = window
        }
    }

    /// Past capacity: the windows that are over; if that leaves more than three quarters, down
    /// to half, keeping the most attempts (ties: the newest).
    private func drop(from windows: inout [String: Window], now: Date) {
        windows = windows.filter { now.timeIntervalSince($0.value.start) < seconds }
        guard windows.count > capacity * 3 / 4 else { return }
        let kept = windows.sorted { ($0.value.attempts, $0.value.start) > ($1.value.attempts, $1.value.start) }.prefix(capacity / 2)
        windows = Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
    }
}

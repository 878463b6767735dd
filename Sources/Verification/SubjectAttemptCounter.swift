import CustosModel
import Foundation
import Synchronization

/// This instance's own count of each subject's 1:1 verifications in its current window, beside
/// the shared counter in PostgreSQL (`verification_attempts`), which the service role may reset
/// or delete: with the database's writer a hostile tenant had as many decisions about one
/// subject as it asked for (helper-85). Held in memory, which the writer cannot reach: with N
/// instances a subject gets at most N limits' worth per window. Counted as the shared counter
/// counts: a decision recorded counts, a refused call does not.
final class SubjectAttemptCounter: Sendable {
    let limit: VerificationAttemptLimit
    /// Subjects held at most. Past it, windows that are over go first, then the oldest: a
    /// subject dropped has the shared counter alone until its next decision here.
    let capacity: Int
    private let windows = Mutex([String: Window]())

    struct Window {
        var start: Date
        var attempts: Int
    }

    init(limit: VerificationAttemptLimit, capacity: Int = 200_000) {
        self.limit = limit
        self.capacity = max(1, capacity)
    }

    private var seconds: Double { Double(limit.window.components.seconds) }

    /// The key of `subject` (a reference) of `tenant`.
    static func key(_ tenant: TenantID, _ subject: SubjectReference) -> String {
        tenant.rawValue + "/" + subject.value
    }

    /// - Throws: the limit's refusal when this instance has counted the limit in the window.
    func check(_ key: String, now: Date) throws {
        let refusedSince = windows.withLock { windows -> Date? in
            guard let window = windows[key], now.timeIntervalSince(window.start) < seconds, window.attempts >= limit.attempts else { return nil }
            return window.start
        }
        if let refusedSince { throw limit.refusal(windowStart: refusedSince) }
    }

    /// Counts a decision recorded at `now`.
    func count(_ key: String, now: Date) {
        windows.withLock { windows in
            if var window = windows[key], now.timeIntervalSince(window.start) < seconds {
                window.attempts += 1
                windows[key] = window
                return
            }
            if windows.count >= capacity { drop(from: &windows, now: now) }
            windows[key] = Window(start: now, attempts: 1)
        }
    }

    private func drop(from windows: inout [String: Window], now: Date) {
        windows = windows.filter { now.timeIntervalSince($0.value.start) < seconds }
        guard windows.count >= capacity else { return }
        let kept = windows.sorted { $0.value.start > $1.value.start }.prefix(capacity / 2)
        windows = Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
    }
}

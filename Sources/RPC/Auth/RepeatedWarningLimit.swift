import Synchronization

/// Lets one warning line per cause through per interval and counts the rest, so a caller who
/// repeats a refused request cannot fill the log with it (attack review, session 18: an API key
/// under a disabled pepper version wrote a warning on every call).
final class RepeatedWarningLimit: Sendable {
    let interval: Duration
    /// Causes remembered at most; past it the oldest knowledge is dropped (a flood of distinct
    /// causes then logs again, at most one line per cause per interval while remembered).
    let capacity: Int
    private let state = Mutex([String: (since: ContinuousClock.Instant, suppressed: Int)]())

    init(interval: Duration = .seconds(60), capacity: Int = 1_024) {
        self.interval = interval
        self.capacity = capacity
    }

    /// `nil` when a line for `cause` went out less than ``interval`` ago (this one is counted);
    /// otherwise the number of lines suppressed since the last one, and this one should be logged.
    func admit(_ cause: String, now: ContinuousClock.Instant = .now) -> Int? {
        state.withLock { seen in
            if var entry = seen[cause], now - entry.since < interval {
                entry.suppressed += 1
                seen[cause] = entry
                return nil
            }
            let suppressed = seen[cause]?.suppressed ?? 0
            if seen[cause] == nil, seen.count >= capacity {
                seen = seen.filter { now - $0.value.since < interval }
                if seen.count >= capacity { seen.removeAll() }
            }
            seen[cause] = (now, 0)
            return suppressed
        }
    }
}

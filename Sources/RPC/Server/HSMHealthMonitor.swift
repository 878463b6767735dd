public import HSM
public import Logging

/// Keeps the whole server's health status (`""` in ``HealthStatusRegistry``) on whether this
/// instance's HSM pool answers: one random-number call each ``interval``, through the pool's
/// token failover (any token in service will do). While no token answers, the instance reports
/// NOT_SERVING, so health-checked clients (``HealthCheckedTransport``) send its calls to another
/// instance; the probe is also the call that lets the pool's breaker close again.
///
/// The database is not probed: every instance shares it, so another instance would fare no
/// better.
public struct HSMHealthMonitor: Sendable {
    public let pool: SessionPool
    public let health: HealthStatusRegistry
    public let interval: Duration
    let logger: Logger

    public init(pool: SessionPool, health: HealthStatusRegistry, interval: Duration = .seconds(1), logger: Logger) {
        self.pool = pool
        self.health = health
        self.interval = interval
        self.logger = logger
    }

    /// Probes until cancelled.
    public func run() async {
        var serving = true
        while !Task.isCancelled {
            let answered = (try? await pool.random(count: 1)) != nil
            if answered != serving {
                serving = answered
                if answered {
                    logger.notice("the HSM answers again: health SERVING")
                } else {
                    logger.warning("no HSM token answers: health NOT_SERVING until one does")
                }
            }
            health.setStatus(answered ? .serving : .notServing, for: "")
            try? await Task.sleep(for: interval)
        }
    }
}

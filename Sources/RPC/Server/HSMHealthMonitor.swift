public import HSM
public import Logging

/// Keeps every health status in ``HealthStatusRegistry`` (the whole server's `""` and each
/// service's) on whether this instance's HSM pool answers: one random-number call each
/// ``interval``, through the pool's token failover (any token in service will do). While no
/// token answers, the instance reports NOT_SERVING, so health-checked clients
/// (``HealthCheckedTransport``) send its calls to another instance; the probe is also the call
/// that lets the pool's breaker close again. A busy pool
/// (``HSMError/exhausted(waitedNanoseconds:maxSessions:)``) is an answer: load is no outage.
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
            let answered: Bool
            do {
                _ = try await pool.random(count: 1)
                answered = true
            } catch HSMError.exhausted {
                // Every worker busy past the pool's wait: the HSM answers, this instance is
                // loaded. NOT_SERVING here would send its clients to the others, which would
                // then fill up and do the same in turn.
                answered = true
            } catch {
                answered = false
            }
            if answered != serving {
                serving = answered
                if answered {
                    logger.notice("the HSM answers again: health SERVING")
                } else {
                    logger.warning("no HSM token answers: health NOT_SERVING until one does")
                }
            }
            // Every name, not only the whole server's: each Custos service needs the HSM, and a
            // health check asked by service name (a balancer's `service_name`, a Kubernetes
            // gRPC probe's `service`) would otherwise hear SERVING from an instance that fails
            // every call.
            for name in health.all().keys { health.setStatus(answered ? .serving : .notServing, for: name) }
            try? await Task.sleep(for: interval)
        }
    }
}

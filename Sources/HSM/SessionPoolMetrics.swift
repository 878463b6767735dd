import Metrics
import PKCS11
import Synchronization

/// The pool's swift-metrics instruments, made once so the hot path only records.
final class SessionPoolMetrics: Sendable {
    let sessionsInUse: Gauge
    let sessionsOpen: Gauge
    let sessionsMax: Gauge
    let waiting: Gauge
    let breakerOpen: Gauge
    let waitTime: Timer
    let exhausted: Counter
    let relogins: Counter
    let reinitializations: Counter
    let keyCacheHits: Counter
    let keyCacheMisses: Counter
    private let callTimers: [HSMOperation: Timer]
    private let errorCounters = Mutex<[String: Counter]>([:])

    init(label: String) {
        let dimensions = [("token", label)]
        sessionsInUse = Gauge(label: "custos_hsm_sessions", dimensions: dimensions + [("state", "in_use")])
        sessionsOpen = Gauge(label: "custos_hsm_sessions", dimensions: dimensions + [("state", "open")])
        sessionsMax = Gauge(label: "custos_hsm_sessions", dimensions: dimensions + [("state", "max")])
        waiting = Gauge(label: "custos_hsm_waiting_requests", dimensions: dimensions)
        breakerOpen = Gauge(label: "custos_hsm_breaker_open", dimensions: dimensions)
        waitTime = Timer(label: "custos_hsm_session_wait", dimensions: dimensions, preferredDisplayUnit: .microseconds)
        exhausted = Counter(label: "custos_hsm_exhausted_total", dimensions: dimensions)
        relogins = Counter(label: "custos_hsm_relogins_total", dimensions: dimensions)
        reinitializations = Counter(label: "custos_hsm_reinitializations_total", dimensions: dimensions)
        keyCacheHits = Counter(label: "custos_hsm_key_cache_total", dimensions: dimensions + [("result", "hit")])
        keyCacheMisses = Counter(label: "custos_hsm_key_cache_total", dimensions: dimensions + [("result", "miss")])
        var timers = [HSMOperation: Timer]()
        for operation in HSMOperation.allCases {
            timers[operation] = Timer(
                label: "custos_hsm_call", dimensions: dimensions + [("operation", operation.rawValue)],
                preferredDisplayUnit: .microseconds
            )
        }
        callTimers = timers
        self.label = label
    }

    private let label: String

    func recordCall(_ operation: HSMOperation, nanoseconds: UInt64) {
        callTimers[operation]?.recordNanoseconds(Int64(nanoseconds))
    }

    func recordError(_ error: PKCS11Error) {
        let key = error.function.rawValue + "/" + error.returnValue.name
        let counter = errorCounters.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: "custos_hsm_errors_total",
                dimensions: [("token", label), ("function", error.function.rawValue), ("rv", error.returnValue.name)]
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
    }
}

/// The typed operations, as metric dimensions.
public enum HSMOperation: String, Sendable, CaseIterable {
    case hmac, prf, seal, open, wrap, unwrap, sign, verify, random, cmac, generate, custom
}

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
    /// Session objects destroyed to keep the key cache within its bound.
    let keyCacheEvictions: Counter
    /// Session objects the key cache holds (unwrapped keys; token objects are not counted).
    let keyCacheObjects: Gauge
    /// 1 while the token serves calls, 0 while it is out of service (``TokenFailover``).
    let tokenInService: Gauge
    /// Calls that gave up waiting for another process's hold on SoftHSM's token folder and
    /// went on without it (``PKCS11Module/onTokenFolderWaitAbandoned(_:)``).
    let tokenFolderWaitsAbandoned: Counter
    /// Indexed by `HSMOperation.index`: a dictionary lookup hashed the key on every call.
    private let callTimers: [Timer]
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
        keyCacheEvictions = Counter(label: "custos_hsm_key_cache_evictions_total", dimensions: dimensions)
        keyCacheObjects = Gauge(label: "custos_hsm_key_cache_objects", dimensions: dimensions)
        tokenInService = Gauge(label: "custos_hsm_token_in_service", dimensions: dimensions)
        tokenFolderWaitsAbandoned = Counter(label: "custos_hsm_token_folder_waits_abandoned_total", dimensions: dimensions)
        callTimers = HSMOperation.allCases.map { operation in
            Timer(
                label: "custos_hsm_call", dimensions: dimensions + [("operation", operation.rawValue)],
                preferredDisplayUnit: .microseconds
            )
        }
        self.label = label
    }

    private let label: String

    func recordCall(_ operation: HSMOperation, nanoseconds: UInt64) {
        callTimers[operation.index].recordNanoseconds(Int64(nanoseconds))
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

    var index: Int {
        switch self {
        case .hmac: 0
        case .prf: 1
        case .seal: 2
        case .open: 3
        case .wrap: 4
        case .unwrap: 5
        case .sign: 6
        case .verify: 7
        case .random: 8
        case .cmac: 9
        case .generate: 10
        case .custom: 11
        }
    }
}

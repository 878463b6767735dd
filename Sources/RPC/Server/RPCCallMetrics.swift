import Metrics
import Synchronization

/// `custos_rpc_duration_seconds` and `custos_rpc_requests_total` by method (and code), made once
/// per method and code: asking the metrics factory for them on every call (label sanitising and
/// the registry's lookup) was ~1 % of the server's CPU per Ping (`perf`, issue 12).
final class RPCCallMetrics: Sendable {
    private struct Method {
        let duration: Timer
        var requests: [String: Counter]
    }

    private let methods = Mutex([String: Method]())

    func record(method: String, code: String, nanoseconds: Int64) {
        let (duration, requests) = methods.withLock { methods -> (Timer, Counter) in
            if let entry = methods[method], let counter = entry.requests[code] { return (entry.duration, counter) }
            var entry = methods[method]
                ?? Method(duration: Timer(label: "custos_rpc_duration_seconds", dimensions: [("method", method)]), requests: [:])
            let counter = Counter(label: "custos_rpc_requests_total", dimensions: [("method", method), ("code", code)])
            entry.requests[code] = counter
            methods[method] = entry
            return (entry.duration, counter)
        }
        duration.recordNanoseconds(nanoseconds)
        requests.increment()
    }
}

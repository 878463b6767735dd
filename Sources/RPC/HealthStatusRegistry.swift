import Synchronization

/// The serving status of each service name that ``HealthService`` reports (`grpc.health.v1`).
///
/// The empty name `""` stands for the whole server. A name that was never set (or was
/// removed) is unknown: `Check` answers NOT_FOUND for it and `Watch` reports SERVICE_UNKNOWN.
///
/// Thread-safe: statuses may be set from any task, e.g. by the HSM pool's circuit breaker or
/// the database client when they lose or regain their backend.
///
/// At shutdown, ``enterTerminalState()`` marks every service NOT_SERVING, ignores later
/// updates and ends every open `Watch` stream, so that a graceful server shutdown is not held
/// up by health watchers (they would otherwise stay open forever).
public final class HealthStatusRegistry: Sendable {
    /// A known service's status.
    public enum Status: Sendable, Hashable {
        case serving
        case notServing
    }

    private struct State {
        var statuses: [String: Status]
        var watchers: [String: [UInt64: AsyncStream<Status?>.Continuation]] = [:]
        var nextWatcherID: UInt64 = 0
        var terminal = false
    }

    private let state: Mutex<State>

    /// - Parameter statuses: The initial statuses. By default the server as a whole (`""`)
    ///   is serving.
    public init(statuses: [String: Status] = ["": .serving]) {
        self.state = Mutex(State(statuses: statuses))
    }

    /// The status of a service, or `nil` when the name is unknown.
    public func status(of service: String) -> Status? {
        state.withLock { $0.statuses[service] }
    }

    /// Every known service and its status.
    public func all() -> [String: Status] {
        state.withLock { $0.statuses }
    }

    /// Sets a service's status and tells its watchers if it changed. Ignored after
    /// ``enterTerminalState()``.
    public func setStatus(_ status: Status, for service: String) {
        update(service, to: status)
    }

    /// Forgets a service: `Check` answers NOT_FOUND, watchers get SERVICE_UNKNOWN. Ignored
    /// after ``enterTerminalState()``.
    public func removeStatus(for service: String) {
        update(service, to: nil)
    }

    /// Marks every service NOT_SERVING, ends every `Watch` stream after telling it so, and
    /// ignores all later updates. Call it when the server begins to shut down.
    public func enterTerminalState() {
        // Watchers of a service that was serving hear NOT_SERVING; the others already know
        // their last status. Then every stream ends.
        let toFinish = state.withLock { state -> [(AsyncStream<Status?>.Continuation, changed: Bool)] in
            guard !state.terminal else { return [] }
            state.terminal = true
            var out: [(AsyncStream<Status?>.Continuation, changed: Bool)] = []
            for (name, watchers) in state.watchers {
                let changed = state.statuses[name] == .serving
                for continuation in watchers.values {
                    out.append((continuation, changed))
                }
            }
            for name in state.statuses.keys {
                state.statuses[name] = .notServing
            }
            state.watchers = [:]
            return out
        }
        for (continuation, changed) in toFinish {
            if changed {
                continuation.yield(.notServing)
            }
            continuation.finish()
        }
    }

    /// Whether ``enterTerminalState()`` was called.
    public var isTerminal: Bool {
        state.withLock { $0.terminal }
    }

    private func update(_ service: String, to status: Status?) {
        let watchers = state.withLock { state -> [AsyncStream<Status?>.Continuation] in
            guard !state.terminal, state.statuses[service] != status else { return [] }
            state.statuses[service] = status
            return state.watchers[service].map { Array($0.values) } ?? []
        }
        for continuation in watchers {
            continuation.yield(status)
        }
    }

    /// A stream of the service's status (`nil`: unknown) that starts with the current value
    /// and then yields each change; only the newest value is buffered, so a slow watcher never
    /// piles up updates. It finishes at ``enterTerminalState()``, when the consumer's task is
    /// cancelled, or when `stop` is called (gRPC cancels an RPC through its cancellation
    /// handle, not by cancelling the handler's task).
    func watch(_ service: String) -> (statuses: AsyncStream<Status?>, stop: @Sendable () -> Void) {
        let (stream, continuation) = AsyncStream.makeStream(of: Status?.self, bufferingPolicy: .bufferingNewest(1))
        // Yield the current value under the lock, so no change can slip in between it and the
        // registration.
        let id = state.withLock { state -> UInt64? in
            continuation.yield(state.statuses[service])
            guard !state.terminal else { return nil }
            let id = state.nextWatcherID
            state.nextWatcherID += 1
            state.watchers[service, default: [:]][id] = continuation
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                self?.removeWatcher(service, id)
            }
        } else {
            continuation.finish()
        }
        return (stream, { continuation.finish() })
    }

    private func removeWatcher(_ service: String, _ id: UInt64) {
        state.withLock { state in
            state.watchers[service]?[id] = nil
            if state.watchers[service]?.isEmpty == true {
                state.watchers[service] = nil
            }
        }
    }

    /// How many `Watch` streams are open (for tests and metrics).
    public var watcherCount: Int {
        state.withLock { $0.watchers.values.reduce(0) { $0 + $1.count } }
    }
}

import Metrics
import Synchronization

/// Counts the transactions a ``Database`` committed, in total and by context (the name each
/// ``Database/withTransaction(context:_:)`` scope gives itself; a fixed string in the code, so
/// the metric's cardinality is bounded), and reports them as `custos_db_commits_total{context}`
/// to whatever metrics backend the process bootstrapped (Prometheus in `serve`). One atomic add
/// and one short lock per commit: nothing next to the commit's round trip.
public final class CommitCounter: Sendable {
    private let total = Atomic<Int>(0)
    private let byContext = Mutex([String: (count: Int, metric: Counter)]())

    init() {}

    func count(_ context: String) {
        total.add(1, ordering: .relaxed)
        let metric = byContext.withLock { counts -> Counter in
            let metric = counts[context]?.metric ?? Counter(label: Self.metricLabel, dimensions: [("context", context)])
            counts[context] = ((counts[context]?.count ?? 0) + 1, metric)
            return metric
        }
        metric.increment()
    }

    /// The metric's name.
    public static let metricLabel = "custos_db_commits_total"

    /// Transactions committed since the client was made.
    public var committed: Int { total.load(ordering: .relaxed) }

    /// Transactions committed since the client was made, by context.
    public var committedByContext: [String: Int] { byContext.withLock { $0.mapValues(\.count) } }
}

import CustosCommandLine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import RPC
import Storage

/// What the bench reads from a service in another process through its `/metrics` (Prometheus
/// text): its PostgreSQL commits (the sum of `custos_db_commits_total` over its contexts), its
/// CPU time (`process_cpu_seconds_total`) and its HSM calls that hopped to a worker thread.
struct ServerMetrics {
    static let hsmHopsLabel = "custos_hsm_session_wait_count"

    let commits: Int
    /// Nil from a server that does not export it (older than the bench).
    let cpuSeconds: Double?
    /// HSM calls queued to a worker thread and resumed from it (`custos_hsm_session_wait`'s
    /// count, over every token): a call from a task on the pool's executor runs inline and is
    /// not counted. Nil when the server has made no such call yet, or in-process.
    var hsmHops: Int? = nil

    static func scrape(_ target: RPCLoadGenerator.Target) async throws -> ServerMetrics {
        guard let url = URL(string: "http://\(target.description)/metrics") else { throw LocalError.failed("no metrics URL for \(target)") }
        let (data, response) = try await URLSession.shared.data(from: url)
        guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw LocalError.failed("GET \(url) did not answer 200") }
        return try parse(String(decoding: data, as: UTF8.self))
    }

    static func parse(_ text: String) throws -> ServerMetrics {
        var commits = 0.0
        var found = false
        var cpu: Double?
        var hops: Double?
        for line in text.split(separator: "\n") {
            let value = line.split(separator: " ").last.flatMap { Double($0) }
            if line.hasPrefix(CommitCounter.metricLabel + "{") || line.hasPrefix(CommitCounter.metricLabel + " "), let value {
                commits += value
                found = true
            } else if line.hasPrefix(ProcessCPUTime.metricName + " ") {
                cpu = value
            } else if line.hasPrefix(hsmHopsLabel + "{") || line.hasPrefix(hsmHopsLabel + " "), let value {
                hops = (hops ?? 0) + value
            }
        }
        guard found else { throw LocalError.failed("the server's metrics have no \(CommitCounter.metricLabel) (an older server, or no commit yet)") }
        return ServerMetrics(commits: Int(commits), cpuSeconds: cpu, hsmHops: hops.map { Int($0) })
    }
}

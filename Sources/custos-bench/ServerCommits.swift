import CustosCommandLine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Storage

/// The PostgreSQL commits of a service in another process, read from its `/metrics`
/// (Prometheus text): the sum of `custos_db_commits_total` over its contexts.
enum ServerCommits {
    static func scrape(_ target: RPCLoadGenerator.Target) async throws -> Int {
        guard let url = URL(string: "http://\(target.description)/metrics") else { throw LocalError.failed("no metrics URL for \(target)") }
        let (data, response) = try await URLSession.shared.data(from: url)
        guard (response as? HTTPURLResponse)?.statusCode == 200 else { throw LocalError.failed("GET \(url) did not answer 200") }
        return try total(in: String(decoding: data, as: UTF8.self))
    }

    /// The sum of every `custos_db_commits_total` sample in Prometheus text.
    static func total(in text: String) throws -> Int {
        var total = 0.0
        var found = false
        for line in text.split(separator: "\n") where line.hasPrefix(CommitCounter.metricLabel + "{") || line.hasPrefix(CommitCounter.metricLabel + " ") {
            guard let value = line.split(separator: " ").last.flatMap({ Double($0) }) else { continue }
            total += value
            found = true
        }
        guard found else { throw LocalError.failed("the server's metrics have no \(CommitCounter.metricLabel) (an older server, or no commit yet)") }
        return Int(total)
    }
}

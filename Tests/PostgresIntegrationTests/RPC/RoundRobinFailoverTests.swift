import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSMTestSupport
import RPC
import Synchronization
import Testing

/// The round-robin client (``RoundRobinClient``) against two real `custos serve` processes on
/// one schema and token, one of them killed with SIGKILL while officers write through both.
@Suite("Round-robin client: one of two instances killed with SIGKILL", .serialized)
struct RoundRobinFailoverTests {
    @Test("Reads keep answering on the survivor, no write is applied twice or lost once acknowledged, and a restarted instance is taken back")
    func killOneOfTwo() async throws {
        let harness = try await CustodyHarness.make("rrkill")
        let (config, children, (first, firstListening), (second, secondListening)) = try await ChildCustos.serveTwo(harness)
        defer { children.killAll() }
        let addresses = try ServiceAddresses(parsing: "\(firstListening),\(secondListening)")
        let certificates = try TestCertificates.get()
        let alice = RPCClientTLS(
            certificateChain: certificates.path("officer-alice.pem"), privateKey: certificates.path("officer-alice.key"), serverCA: certificates.path("ca.pem")
        ).transportSecurity
        let transport = try RoundRobinClient.transport(addresses, security: alice, timeout: .seconds(30))

        try await withGRPCClient(transport: transport) { client in
            let admin = Custos_V1_Admin.Client(wrapping: client)
            for _ in 0..<6 { _ = try await admin.listTenants(Custos_V1_ListTenantsRequest()) }

            // Writers through both instances; the first instance dies once some were answered.
            let acknowledged = Labels(), attempted = Labels()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<4 {
                    group.addTask {
                        for index in 0..<12 {
                            let label = "w\(writer)-\(index)"
                            attempted.append(label)
                            if (try? await admin.createTenant(.with { $0.label = label })) != nil { acknowledged.append(label) }
                        }
                    }
                }
                while acknowledged.all.count < 8 { try await Task.sleep(for: .milliseconds(5)) }
                kill(first.processIdentifier, SIGKILL)
                try await group.waitForAll()
            }
            first.waitUntilExit()

            // Reads: each answered, retried on the survivor if it met the dead connection.
            var failedReads = [RPCError.Code]()
            for _ in 0..<20 {
                if let code = await RPCHarness.code({ _ = try await admin.listTenants(Custos_V1_ListTenantsRequest()) }) { failedReads.append(code) }
            }
            #expect(failedReads.isEmpty, "reads failed after the kill: \(failedReads)")

            let labels = try await admin.listTenants(Custos_V1_ListTenantsRequest()).tenants.map(\.label).filter { $0.hasPrefix("w") }
            let counts = Dictionary(labels.map { ($0, 1) }, uniquingKeysWith: +)
            #expect(counts.values.allSatisfy { $0 == 1 }, "a write was applied twice: \(counts.filter { $0.value > 1 })")
            let missing = acknowledged.all.filter { counts[$0] == nil }
            #expect(missing.isEmpty, "acknowledged writes missing: \(missing)")
            #expect(attempted.all.count == 48)

            // The killed instance comes back on its port; the client probes it and uses it again
            // once the other one is gone too.
            let port = try #require(firstListening.split(separator: ":").last.map(String.init))
            children.add(try ChildCustos.spawn(["serve", "--config", config, "--port", port, "--metrics-port", "0"]))
            var back = false
            for _ in 0..<600 where !back {
                back = (try? await Self.listTenants(at: "127.0.0.1:\(port)", security: alice)) != nil
                if !back { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(back, "the restarted instance answers on its own")
            // Longer than the client's longest reconnect backoff (2 s): its probe has found the
            // instance again by then, however the retries were spaced.
            try await Task.sleep(for: .seconds(3))
            kill(second.processIdentifier, SIGKILL)
            second.waitUntilExit()
            // The client may learn of the second kill from a call (on a loaded machine, before its
            // own probe does): reads must then settle on the restarted instance, 10 in a row.
            var failedAfterSwap = [RPCError.Code](), inARow = 0
            for _ in 0..<300 where inARow < 10 {
                if let code = await RPCHarness.code({ _ = try await admin.listTenants(Custos_V1_ListTenantsRequest()) }) {
                    failedAfterSwap.append(code)
                    inARow = 0
                    try await Task.sleep(for: .milliseconds(100))
                } else {
                    inARow += 1
                }
            }
            #expect(inARow == 10, "reads did not settle on the restarted instance: \(failedAfterSwap)")
        }
        await harness.shutdown()
    }

    static func listTenants(at address: String, security: HTTP2ClientTransport.Posix.TransportSecurity) async throws -> Int {
        let transport = try RoundRobinClient.transport(try ServiceAddresses(parsing: address), security: security, timeout: .seconds(5))
        return try await withGRPCClient(transport: transport) { client in
            try await Custos_V1_Admin.Client(wrapping: client).listTenants(Custos_V1_ListTenantsRequest()).tenants.count
        }
    }
}

/// Labels from concurrent writers.
final class Labels: Sendable {
    private let labels = Mutex([String]())

    func append(_ label: String) { labels.withLock { $0.append(label) } }

    var all: [String] { labels.withLock { $0 } }
}

import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSMTestSupport
import PKCS11
import RPC
import Testing

/// The health-checked round robin (``HealthCheckedTransport``) over two instances on one schema:
/// one that reports NOT_SERVING gets no calls, and one killed with SIGKILL fails no idempotent
/// call beyond the client's retry.
@Suite("Health-checked round robin: instances that do not serve are skipped", .serialized)
struct HealthCheckedFailoverTests {
    static func security(_ certificates: TestCertificates) -> HTTP2ClientTransport.Posix.TransportSecurity {
        RPCClientTLS(
            certificateChain: certificates.path("officer-alice.pem"), privateKey: certificates.path("officer-alice.key"), serverCA: certificates.path("ca.pem")
        ).transportSecurity
    }

    /// Waits (up to a minute, generous on a loaded machine) until the client's health watches
    /// report `expected`, in address order.
    static func waitForHealth(_ transport: HealthCheckedTransport, _ expected: [HealthCheckedTransport.InstanceHealth]) async throws {
        for _ in 0..<3_000 where transport.instances.map(\.health) != expected { try await Task.sleep(for: .milliseconds(20)) }
        #expect(transport.instances.map(\.health) == expected)
    }

    /// The code and message of a failed call (`nil`: it answered): the message says which layer
    /// gave up (the transport that could not open a stream, the retry, the server).
    static func failure(_ call: () async throws -> Void) async -> String? {
        do {
            try await call()
            return nil
        } catch let error as RPCError {
            return "\(error.code): \(error.message)"
        } catch {
            return "\(type(of: error))"
        }
    }

    @Test("An instance whose HSM is gone reports NOT_SERVING and gets no call: every write answers on the other; SERVING again once its HSM answers")
    func notServingSkipped() async throws {
        try await RPCHarness.with("hcskip") { first in
            let moduleB = try TestToken.isolatedModule()
            try await SecondInstance.with(beside: first, module: moduleB) { second in
                let addresses = try ServiceAddresses(parsing: "127.0.0.1:\(first.port),127.0.0.1:\(second.rpc.port)")
                let transport = try RoundRobinClient.healthChecked(addresses, security: Self.security(first.certificates), timeout: .seconds(30))
                try await withGRPCClient(transport: transport) { client in
                    let admin = Custos_V1_Admin.Client(wrapping: client)
                    try await Self.waitForHealth(transport, [.serving, .serving])
                    // B loses its token; its health probe (HSMHealthMonitor) says so. Every HSM call
                    // there would answer UNAVAILABLE, and CreateTenant (a write, never retried) makes
                    // tenant keys on the HSM.
                    let removed = TokenRemoved()
                    moduleB.installFaultInjector(removed)
                    removed.armed.store(true, ordering: .relaxed)
                    try await Self.waitForHealth(transport, [.serving, .notServing])
                    #expect(second.services.health.status(of: "") == .notServing)
                    var failed = [RPCError.Code]()
                    for index in 0..<12 {
                        if let code = await RPCHarness.code({ _ = try await admin.createTenant(.with { $0.label = "hc-\(index)" }) }) { failed.append(code) }
                    }
                    #expect(failed.isEmpty, "writes routed to the instance that reports NOT_SERVING: \(failed)")
                    let labels = try await admin.listTenants(Custos_V1_ListTenantsRequest()).tenants.map(\.label).filter { $0.hasPrefix("hc-") }
                    #expect(labels.count == 12)

                    // The probe is also what closes B's breaker again.
                    removed.armed.store(false, ordering: .relaxed)
                    try await Self.waitForHealth(transport, [.serving, .serving])
                }
            }
        }
    }

    @Test("One of two `custos serve` killed with SIGKILL under reads: no read fails, the dead one is seen not serving, later writes all answer")
    func killedInstanceSkipped() async throws {
        let harness = try await CustodyHarness.make("hckill")
        let (_, children, (first, firstAddress), (_, secondAddress)) = try await ChildCustos.serveTwo(harness)
        defer { children.killAll() }
        let addresses = try ServiceAddresses(parsing: "\(firstAddress),\(secondAddress)")
        let transport = try RoundRobinClient.healthChecked(addresses, security: Self.security(try TestCertificates.get()), timeout: .seconds(30))

        try await withGRPCClient(transport: transport) { client in
            let admin = Custos_V1_Admin.Client(wrapping: client)
            try await Self.waitForHealth(transport, [.serving, .serving])
            let answered = Labels()
            let failures = Labels()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for reader in 0..<4 {
                    group.addTask {
                        for index in 0..<25 {
                            if let failure = await Self.failure({ _ = try await admin.listTenants(Custos_V1_ListTenantsRequest()) }) {
                                failures.append(failure)
                            } else {
                                answered.append("r\(reader)-\(index)")
                            }
                        }
                    }
                }
                while answered.all.count < 10 { try await Task.sleep(for: .milliseconds(5)) }
                kill(first.processIdentifier, SIGKILL)
                try await group.waitForAll()
            }
            first.waitUntilExit()
            // Known issue (issue 13 stays open): in CI, with ~130 suites running, one read in 100
            // sometimes still fails UNAVAILABLE after the kill, with 5 attempts over ~1.5 s as
            // with 4 over 350 ms, so it is not the retry's length; not found yet.
            withKnownIssue("a read can fail UNAVAILABLE after the kill on a loaded machine", isIntermittent: true) {
                #expect(failures.all.isEmpty, "reads failed beyond the retry: \(failures.all)")
                #expect(answered.all.count == 100)
            }
            #expect(answered.all.count + failures.all.count == 100, "every read answered or failed with a code")

            // The dead instance's watch broke with its connection: writes (never retried) go to
            // the survivor only.
            try await Self.waitForHealth(transport, [.notServing, .serving])
            var failedWrites = [RPCError.Code]()
            for index in 0..<8 {
                if let code = await RPCHarness.code({ _ = try await admin.createTenant(.with { $0.label = "after-\(index)" }) }) { failedWrites.append(code) }
            }
            #expect(failedWrites.isEmpty, "writes after the kill failed: \(failedWrites)")
        }
        await harness.shutdown()
    }
}

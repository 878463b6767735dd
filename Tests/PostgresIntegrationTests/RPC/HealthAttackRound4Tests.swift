import Foundation
import GRPCCore
import HSMTestSupport
import PKCS11
import RPC
import Testing

/// Attack review, round 4 (docs/threat-model.md): what a network peer that reaches the health
/// service is told while the instance's HSM does not answer. Failed on the code before its fix.
@Suite("Attack review, round 4: the health service while no token answers", .serialized)
struct HealthAttackRound4Tests {
    @Test("every service name the health service knows goes NOT_SERVING with the server while no token answers, and SERVING again with it")
    func everyNameFollowsTheHSM() async throws {
        try await RPCHarness.with("atk4health") { first in
            let module = try TestToken.isolatedModule()
            try await SecondInstance.with(beside: first, module: module) { second in
                let registry = second.services.health
                let names = registry.all().keys.sorted()
                #expect(names.contains("custos.v1.Verification") && names.contains(""))
                let removed = TokenRemoved()
                module.installFaultInjector(removed)
                removed.armed.store(true, ordering: .relaxed)
                for _ in 0..<3_000 where registry.status(of: "") != .notServing { try await Task.sleep(for: .milliseconds(20)) }
                #expect(registry.status(of: "") == .notServing)
                // Before: only "" changed; a probe or balancer asking by service name (a gRPC
                // health check's `service_name`, a Kubernetes gRPC probe's `service`) was told
                // SERVING and kept sending Verification calls to an instance that fails them all.
                for name in names { #expect(registry.status(of: name) == .notServing, "\(name) still SERVING") }
                let answered = try await second.rpc.withClient(.frontend) { client in
                    try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = "custos.v1.Verification" }).status
                }
                #expect(answered == .notServing)

                removed.armed.store(false, ordering: .relaxed)
                for _ in 0..<3_000 where registry.status(of: "") != .serving { try await Task.sleep(for: .milliseconds(20)) }
                for name in names { #expect(registry.status(of: name) == .serving, "\(name) not SERVING again") }
            }
        }
    }

    @Test("every HSM worker busy past the pool's wait (load, or a tenant's burst) is not a dead HSM: the instance stays SERVING")
    func busyPoolStaysServing() async throws {
        try await RPCHarness.with("atk4busy") { first in
            let configuration = first.custody.token.configuration(workers: 1, acquireTimeout: .seconds(1))
            try await SecondInstance.with(beside: first, pool: configuration) { second in
                let registry = second.services.health
                let hsm = second.services.graph.custody.pool
                for _ in 0..<3_000 where registry.status(of: "") != .serving { try await Task.sleep(for: .milliseconds(20)) }
                // The one worker held for several probe intervals: each probe waits its second
                // and gets `exhausted` (a second, not less: start-up on a loaded machine must
                // not meet the limit). Before: that read as "no token answers", NOT_SERVING, so
                // under load every instance in turn sent its clients to the others.
                async let held: Void = hsm.withSession { _ in Thread.sleep(forTimeInterval: 6) }
                // Watched for at least 5 s of the 6: at least two probes end inside.
                var statuses = [HealthStatusRegistry.Status]()
                for _ in 0..<250 {
                    statuses.append(registry.status(of: "") ?? .notServing)
                    try await Task.sleep(for: .milliseconds(20))
                }
                try await held
                #expect(!statuses.contains(.notServing), "a busy pool was reported NOT_SERVING")
            }
        }
    }
}

import GRPCCore
import HSM
import HSMTestSupport
import PKCS11
import RPC
import Synchronization
import Testing

/// The Admin RPC's HSM status lists every configured token, and still answers — saying which
/// token is in trouble — while the first token cannot be reached.
@Suite("RPC: HSM status per token", .serialized)
struct HSMStatusRPCTests {
    /// Every function but `C_Finalize` answers `CKR_DEVICE_REMOVED` while armed.
    final class Removed: PKCS11FaultInjector {
        let armed = Atomic<Bool>(false)

        func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
            armed.load(ordering: .relaxed) && function != .finalize ? .deviceRemoved : nil
        }
    }

    @Test("HSMStatus lists the token by label, in service; with the device removed it still answers, with the breaker open")
    func statusPerToken() async throws {
        let module = try TestToken.isolatedModule()
        let custody = try await CustodyHarness.make("rpchsm", module: module)
        let label = custody.token.label
        try await RPCHarness.with("rpchsm", custody: custody) { rpc in
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let healthy = try await admin.hsmStatus(Custos_V1_HSMStatusRequest(), options: RPCHarness.fast)
                #expect(healthy.tokenLabel == label && !healthy.tokenSerial.isEmpty)
                #expect(healthy.tokens.map(\.tokenLabel) == [label])
                #expect(healthy.tokens.allSatisfy { $0.inService && !$0.hasOutOfServiceSince && $0.lastErrorClass.isEmpty && $0.openSessions > 0 })

                let removed = Removed()
                module.installFaultInjector(removed)
                removed.armed.store(true, ordering: .relaxed)
                // Calls fail until the pool's recovery gives up and opens its breaker (bounded).
                var status = healthy
                for _ in 0..<200 where !status.breakerOpen {
                    _ = try? await custody.pool.random(count: 1)
                    status = try await admin.hsmStatus(Custos_V1_HSMStatusRequest(), options: RPCHarness.fast)
                }
                removed.armed.store(false, ordering: .relaxed)
                #expect(status.breakerOpen && status.tokens.first?.breakerOpen == true)
                #expect(status.tokenLabel == label && status.tokenSerial.isEmpty, "the label as configured; the token itself could not be asked")
            }
        }
    }

    @Test("Two tokens: HSMStatus lists both in service; with the first removed it shows out, since when and why, while the replica serves; back after the probe")
    func twoTokens() async throws {
        try await RPCHarness.with("rpchsm2") { first in
            let replica = try await ReplicaTokenPool.restoreReplica(first.custody, name: "rpchsm2r")
            var configuration = first.custody.token.configuration()
            configuration.replicas = [
                TokenEndpoint(modulePath: try TestToken.isolatedModule().path, token: .label(replica.label), userPIN: .file(path: replica.pinFile)),
            ]
            let moduleA = try TestToken.isolatedModule()
            // An instance over both tokens, its first token through a module the test can remove.
            try await SecondInstance.with(beside: first, pool: configuration, module: moduleA) { second in
                let pool = second.services.graph.custody.pool
                try await second.rpc.withClient(.alice) { client in
                    let admin = Custos_V1_Admin.Client(wrapping: client)
                    let labels = [first.custody.token.label, replica.label]
                    let healthy = try await admin.hsmStatus(Custos_V1_HSMStatusRequest(), options: RPCHarness.fast)
                    #expect(healthy.tokens.map(\.tokenLabel) == labels)
                    #expect(healthy.tokens.allSatisfy { $0.inService && $0.takenOut == 0 && $0.lastErrorClass.isEmpty && !$0.hasOutOfServiceSince })

                    let removed = Removed()
                    moduleA.installFaultInjector(removed)
                    removed.armed.store(true, ordering: .relaxed)
                    // Calls that may run on any token move to the replica; the first is taken out.
                    var failed = 0
                    for _ in 0..<20 where (try? await pool.random(count: 16)) == nil { failed += 1 }
                    let out = try await admin.hsmStatus(Custos_V1_HSMStatusRequest(), options: RPCHarness.fast)
                    #expect(failed == 0, "\(failed) of 20 calls failed with the replica in service")
                    #expect(out.tokens.map(\.tokenLabel) == labels)
                    #expect(!out.tokens[0].inService && out.tokens[0].takenOut == 1 && out.tokens[0].hasOutOfServiceSince)
                    #expect(out.tokens[0].lastErrorClass == HSMError.unavailable(reason: "", retryAfterNanoseconds: nil).failureClass)
                    #expect(out.tokens[1].inService && out.tokens[1].takenOut == 0 && out.tokens[1].lastErrorClass.isEmpty)

                    // Back: the probe finds it answering again.
                    removed.armed.store(false, ordering: .relaxed)
                    var back = out
                    for _ in 0..<600 where !back.tokens[0].inService {
                        try await Task.sleep(for: .milliseconds(100))
                        back = try await admin.hsmStatus(Custos_V1_HSMStatusRequest(), options: RPCHarness.fast)
                    }
                    #expect(back.tokens[0].inService && back.tokens[0].broughtBack == 1 && !back.tokens[0].hasOutOfServiceSince)
                }
            }
        }
    }
}

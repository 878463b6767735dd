import GRPCCore
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
}

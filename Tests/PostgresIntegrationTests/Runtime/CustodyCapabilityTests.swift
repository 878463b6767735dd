import Composition
import Custody
import HSM
import HSMTestSupport
import Logging
import Testing

/// The service refuses to serve custody on a module that cannot keep tenant keys unreadable with
/// the user PIN — NSS softokn ignores unwrap templates — before anything is built on it.
@Suite("Custody refused on a module that cannot keep keys unreadable", .serialized)
struct CustodyCapabilityTests {
    @Test("NSS softokn is refused with every reason named; SoftHSM is accepted")
    func nssRefused() async throws {
        let (token, module) = try NSSToken.isolated("refused")
        let nss = try SessionPool(configuration: token.configuration(workers: 2), module: module, logger: Logger(label: "test"))
        try await nss.start()
        await #expect { try await CustosRuntime.requireCustodyCapabilities(nss) } throws: { error in
            guard case ConfigurationError.moduleUnfit(let path, let failed) = error else { return false }
            return path == token.configuration.modulePath && failed.count == 4
                && failed.contains { $0.hasPrefix("Unwrap templates enforced") } && failed.contains { $0.hasPrefix("Private data objects") }
                && !failed.contains { $0.hasPrefix("Ed25519") }
        }
        await nss.shutdown()

        let softhsm = try SessionPool(configuration: try TestToken.make("capable").configuration(), logger: Logger(label: "test"))
        try await softhsm.start()
        try await CustosRuntime.requireCustodyCapabilities(softhsm)
        await softhsm.shutdown()
    }

    @Test("a module without Ed25519 serves custody with only v1a webhook keys turned off, refused with a precise error")
    func withoutEd25519() async throws {
        let token = try TestToken.make("noeddsa")
        let module = try TestToken.isolatedModule()
        let pool = try SessionPool(configuration: token.configuration(), module: module, logger: Logger(label: "test"))
        try await pool.start()
        // As on a module without CKM_EDDSA; no check custody needs signs with C_SignInit.
        module.installFaultInjector(RandomFaults([.signInit: [(.mechanismInvalid, 1)]]))
        #expect(try await CustosRuntime.requireCustodyCapabilities(pool) == false)
        module.installFaultInjector(nil)
        #expect(try await CustosRuntime.requireCustodyCapabilities(pool) == true)
        await pool.shutdown()

        let harness = try await CustodyHarness.make("noeddsa")
        let signer = WebhookSigner(pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: harness.trustedEscrowKeys, ed25519Available: false)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        await #expect { _ = try await signer.createEd25519Key(tenant: tenant, actor: "officer") } throws: { error in
            if case CustodyError.featureUnavailable = error { true } else { false }
        }
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty, "no key pair made")
        _ = try await signer.createSecret(tenant: tenant, actor: "officer")
        _ = try await signer.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [1])
        await harness.shutdown()
    }
}

import Composition
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
        let nss = try SessionPool(configuration: try NSSToken.shared().configuration(), logger: Logger(label: "test"))
        try await nss.start()
        await #expect { try await CustosRuntime.requireCustodyCapabilities(nss) } throws: { error in
            guard case ConfigurationError.moduleUnfit(let path, let failed) = error else { return false }
            return path == NSSToken.modulePath && failed.count == 3
                && failed.contains { $0.hasPrefix("Unwrap templates enforced") } && !failed.contains { $0.hasPrefix("Ed25519") }
        }
        await nss.shutdown()

        let token = try TestToken.make("capable")
        let softhsm = try SessionPool(configuration: token.configuration(), logger: Logger(label: "test"))
        try await softhsm.start()
        try await CustosRuntime.requireCustodyCapabilities(softhsm)
        await softhsm.shutdown()
    }
}

import Custody
import CustosModel
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSMTestSupport
import RPC
import Testing
import Tokenization
import Verification

/// A real `kill -9` of `custos serve` in the middle of a silent biometric migration: a Verify
/// under the old version that matched GREEN has written the subject's new template inside its
/// transaction, and the server dies before the commit. Nothing is half-written: the subject stays
/// enrolled under the old version, still verifies GREEN, and migrates on the next Verify.
@Suite("Biometric migration survives kill -9 inside its transaction", .serialized)
struct BiometricMigrationKillTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.61)) }

    @Test("killed after the new template is written, before the commit: the old template stays, the next Verify migrates it")
    func killedMidMigration() async throws {
        let verification = try await VerificationHarness.make("migkill")
        let (graph, keyring) = (verification.graph, verification.custody.keyring)
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        func consented() async throws -> UUID {
            let created = try await graph.sessions.create(tenant: tenant, externalID: PersonalText("migrating-subject"), name: nil, email: nil)
            let session = try await graph.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
            _ = try await graph.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "custos-notice-1")
            return session
        }
        _ = try await graph.flow.enrol(tenant: tenant, session: try await consented(), features: try FeatureVector(Self.face))
        #expect(try await keyring.rotateBiometric(tenant, overlap: .seconds(3_600), actor: "officer") == 2)

        let directory = try ChildCustos.directory(verification.custody)
        let config = try ChildCustos.writeConfiguration(verification.custody, in: directory)
        let (server, address) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": "migration.templateStored"])
        let port = try #require(address?.split(separator: ":").last.flatMap { Int($0) }, "custos serve listens")
        let session = try await consented()
        let certificates = try TestCertificates.get()
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port),
            transportSecurity: RPCClientTLS(
                certificateChain: certificates.path("frontend-demo.pem"), privateKey: certificates.path("frontend-demo.key"),
                serverCA: certificates.path("ca.pem")
            ).transportSecurity
        )
        var metadata = Metadata()
        metadata.addString(tenant.rawValue, forKey: "custos-tenant")
        let answered = try await withGRPCClient(transport: transport) { client in
            do {
                let request = Custos_V1_VerifyRequest.with { $0.sessionID = session.uuidString.lowercased(); $0.features = Self.face }
                _ = try await Custos_V1_Verification.Client(wrapping: client).verify(request, metadata: metadata)
                return true
            } catch {
                return false
            }
        }
        try await ChildCustos.waitForExit(server, seconds: 180)
        #expect(!answered, "the call died with the server")
        #expect(ChildCustos.killedItself(server), "the server stopped itself with SIGKILL inside the migration")

        #expect(try await keyring.storedReferences(tenant, .bioSeed, version: 1) == 1, "the template under v1 is intact")
        #expect(try await keyring.storedReferences(tenant, .bioSeed, version: 2) == 0, "no half-written template under v2")
        let decision = try await graph.flow.verify(tenant: tenant, session: try await consented(), features: try FeatureVector(Self.face))
        #expect(decision.color == .green, "the subject still verifies")
        #expect(try await keyring.storedReferences(tenant, .bioSeed, version: 1) == 0, "and has now migrated")
        #expect(try await keyring.storedReferences(tenant, .bioSeed, version: 2) == 1)
        await verification.custody.shutdown()
    }
}

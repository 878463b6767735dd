import Custody
import CustosModel
import Foundation
import GRPCCore
import RPC
import Storage
import Testing
import Verification

@Suite("RPC: API keys within the certificate's tenants and the server's environment; attempt limits and re-enrolment", .serialized)
struct RPCOracleTests {
    static let face: [Float] = (0..<512).map { Float(sin(Double($0) * 0.37 + 0.5)) }

    @Test("Another tenant's API key over a front-end certificate is PERMISSION_DENIED; a key of another environment is UNAUTHENTICATED, saying why")
    func apiKeyAllowanceAndEnvironment() async throws {
        try await RPCHarness.with("rpcallowance") { rpc in
            let (a, key) = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let a = try await admin.createTenant(.with { $0.label = "tenant-a" }).tenant.tenantID
                return (a, try await admin.issueAPIKey(.with { $0.tenantID = a; $0.scopes = ["verification"] }).apiKey)
            }
            try await rpc.withClient(.narrow) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                do {
                    _ = try await verification.ping(.init(), metadata: bearer(key), options: RPCHarness.fast)
                    Issue.record("tenant A's key worked over a certificate that serves another tenant only")
                } catch let error as RPCError {
                    #expect(error.code == .permissionDenied)
                    #expect(error.message.contains("may not act for the API key's tenant"))
                }
            }
            try await rpc.withClient(.frontend) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: bearer(key)) } == nil,
                        "the same key over a certificate that serves every tenant")

                // The harness serves the `test` environment; a `live` key of the same tenant,
                // valid in every other respect, is refused before any lookup.
                let live = APIKeyService(
                    pool: rpc.custody.pool, database: rpc.custody.service, keyring: rpc.custody.keyring, audit: rpc.custody.audit,
                    environment: "live", logger: rpc.custody.logs.logger
                )
                let issued = try await live.issue(tenant: TenantID(a)!, scopes: ["verification"], actor: "officer")
                let liveKey = String(decoding: issued.key.withUnsafeBytes { Array($0) }, as: UTF8.self)
                #expect(liveKey.hasPrefix("custos_live_"))
                do {
                    _ = try await verification.ping(.init(), metadata: bearer(liveKey), options: RPCHarness.fast)
                    Issue.record("a live key worked at a test server")
                } catch let error as RPCError {
                    #expect(error.code == .unauthenticated)
                    #expect(error.message.contains("'live' environment") && error.message.contains("serves 'test'"))
                }
            }
        }
    }

    @Test("Re-enrolment needs custos-reenrol: true (ALREADY_EXISTS without it, audited with it); past the attempt limit Verify is RESOURCE_EXHAUSTED")
    func reenrolAndAttempts() async throws {
        var settings = RPCSettings()
        settings.verificationAttempts = VerificationAttemptLimit(attempts: 1, window: .seconds(3_600))
        try await RPCHarness.with("rpcoracle", settings: settings) { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            let scope = tenantMetadata(tenant)
            try await rpc.withClient(.frontend) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                func consentedSession() async throws -> String { try await PostgresIntegrationTests.consentedSession(verification, scope: scope) }
                func flagged(_ value: String) -> Metadata {
                    var metadata = scope
                    metadata.addString(value, forKey: VerificationHandler.reenrolMetadataKey)
                    return metadata
                }
                let first = try await consentedSession()
                _ = try await verification.enrol(.with { $0.sessionID = first; $0.features = Self.face }, metadata: scope)
                let second = try await consentedSession()
                for (metadata, expected) in [(scope, RPCError.Code.alreadyExists), (flagged("false"), .alreadyExists), (flagged("yes"), .invalidArgument)] {
                    #expect(await RPCHarness.code {
                        _ = try await verification.enrol(.with { $0.sessionID = second; $0.features = Self.face }, metadata: metadata)
                    } == expected)
                }
                _ = try await verification.enrol(.with { $0.sessionID = second; $0.features = Self.face }, metadata: flagged("true"))

                let verified = try await consentedSession()
                #expect(try await verification.verify(.with { $0.sessionID = verified; $0.features = Self.face }, metadata: scope).decision.color == .green)
                let refused = try await consentedSession()
                do {
                    _ = try await verification.verify(.with { $0.sessionID = refused; $0.features = Self.face }, metadata: scope)
                    Issue.record("a second attempt within the window was answered")
                } catch let error as RPCError {
                    #expect(error.code == .resourceExhausted)
                    #expect(error.message.contains("too many verification attempts"))
                }
            }
            let entries = try await rpc.custody.owner.withTransaction(context: "read audit") { connection in
                try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
            }.filter { $0.action == "subject.reenrol" }
            #expect(entries.count == 1)
            #expect(entries.first?.actor == "frontend:demo", "the audit names the front-end that asked")
        }
    }
}

import CustosModel
import Foundation
import GRPCCore
import RPC
import Testing

@Suite("RPC authentication and tenant scoping, over mutual TLS", .serialized)
struct RPCAuthTests {
    @Test("No certificate, another CA, the wrong role, another tenant's key, a revoked officer: each refused with its code")
    func refusals() async throws {
        try await RPCHarness.with("rpcauth") { rpc in
            let (a, b, key, webhooksOnly) = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let a = try await admin.createTenant(.with { $0.label = "tenant-a" }).tenant.tenantID
                let b = try await admin.createTenant(.with { $0.label = "tenant-b" }).tenant.tenantID
                let key = try await admin.issueAPIKey(.with { $0.tenantID = a; $0.scopes = ["verification", "keys"] }).apiKey
                let webhooksOnly = try await admin.issueAPIKey(.with { $0.tenantID = a; $0.scopes = ["webhooks"] }).apiKey
                return (a, b, key, webhooksOnly)
            }

            // The handshake refuses these: no RPC runs.
            for identity in [RPCHarness.Identity?.none, .otherCA] {
                let code = await RPCHarness.code {
                    try await rpc.withClient(identity) { client in
                        _ = try await Custos_V1_Verification.Client(wrapping: client).ping(.init(), metadata: tenantMetadata(a), options: RPCHarness.fast)
                    }
                }
                #expect(code == .unavailable, "\(String(describing: identity)): handshake refused")
            }

            try await rpc.withClient(.frontend) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                let apiKeys = Custos_V1_APIKeys.Client(wrapping: client)
                #expect(await RPCHarness.code { _ = try await Custos_V1_Admin.Client(wrapping: client).listTenants(.init()) } == .permissionDenied,
                        "a front-end certificate on Admin")
                #expect(await RPCHarness.code { _ = try await verification.ping(.init()) } == .invalidArgument,
                        "a multi-tenant front-end must name the tenant")
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: tenantMetadata("not-a-uuid")) } == .invalidArgument)
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: tenantMetadata(UUID().uuidString.lowercased())) } == .notFound,
                        "an unknown tenant")
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: tenantMetadata(a)) } == nil)
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: bearer(key, tenant: b)) } == .permissionDenied,
                        "tenant A's API key naming tenant B")
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: bearer(webhooksOnly)) } == .permissionDenied,
                        "a key without the verification scope")
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: bearer("custos_test_notakey")) } == .unauthenticated)
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: { var m = Metadata(); m.addString("Basic Zm9vOmJhcg==", forKey: "authorization"); return m }()) } == .unauthenticated)
                let me = try await apiKeys.whoAmI(.init(), metadata: bearer(key))
                #expect(me.tenantID == a && me.scopes == ["verification", "keys"])
                // Sent twice, a tenant or a key is refused, not the first taken (helper-91: a
                // session was created in the first-named tenant; a proxy checking the last sees
                // the other).
                let twoTenants: Metadata = { var m = tenantMetadata(b); m.addString(a, forKey: "custos-tenant"); return m }()
                #expect(await RPCHarness.code { _ = try await verification.ping(.init(), metadata: twoTenants) } == .invalidArgument)
                let twoKeys: Metadata = { var m = bearer(key); m.addString("Bearer \(webhooksOnly)", forKey: "authorization"); return m }()
                #expect(await RPCHarness.code { _ = try await apiKeys.whoAmI(.init(), metadata: twoKeys) } == .unauthenticated)

                // Tenant B's session is invisible to tenant A's key: NOT_FOUND, as if it did not exist.
                let bSession = try await verification.createSession(.with { $0.subjectExternalID = "b-1" }, metadata: tenantMetadata(b)).sessionID
                #expect(await RPCHarness.code { _ = try await verification.getSession(.with { $0.sessionID = bSession }, metadata: bearer(key)) } == .notFound)
                #expect(await RPCHarness.code { _ = try await verification.getSession(.with { $0.sessionID = bSession }, metadata: tenantMetadata(b)) } == nil)
            }

            try await rpc.withClient(.alice) { client in
                #expect(await RPCHarness.code { _ = try await Custos_V1_Verification.Client(wrapping: client).ping(.init(), metadata: tenantMetadata(a)) } == .permissionDenied,
                        "an officer certificate on a tenant service")
                let admin = Custos_V1_Admin.Client(wrapping: client)
                _ = try await admin.revokeCertificate(.with { $0.serial = try! Self.serial(rpc.certificates.path("officer-bob.pem")); $0.subject = "custos://officer/bob" })
                _ = try await admin.disableTenant(.with { $0.tenantID = b })
            }
            let revoked = await RPCHarness.code {
                try await rpc.withClient(.bob) { client in _ = try await Custos_V1_Admin.Client(wrapping: client).listTenants(.init()) }
            }
            #expect(revoked == .unauthenticated, "a revoked officer certificate")
            let disabled = await RPCHarness.code {
                try await rpc.withClient(.frontend) { client in
                    _ = try await Custos_V1_Verification.Client(wrapping: client).ping(.init(), metadata: tenantMetadata(b))
                }
            }
            #expect(disabled == .permissionDenied, "a disabled tenant")
            try await rpc.withClient(.alice) { client in
                let tenants = try await Custos_V1_Admin.Client(wrapping: client).listTenants(.init()).tenants
                #expect(tenants.count == 2, "alice is unaffected")
            }
        }
    }

    @Test("Through the production interceptor and authenticator, a certificate's identity reaches the handler: a front-end and two officers, each named in the audit log")
    func identitiesReachTheHandler() async throws {
        try await RPCHarness.with("rpcidentity") { rpc in
            let a = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "by-alice" }).tenant.tenantID
            }
            let b = try await rpc.withClient(.bob) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "by-bob" }).tenant.tenantID
            }
            // frontend-demo names custos://tenant/*: it may act for any tenant, named per call.
            try await rpc.withClient(.frontend) { client in
                let webhooks = Custos_V1_Webhooks.Client(wrapping: client)
                _ = try await webhooks.createSecret(.init(), metadata: tenantMetadata(a))
                _ = try await webhooks.createSecret(.init(), metadata: tenantMetadata(b))
            }
            let entries = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).auditTail(.with { $0.limit = 100 }).entries
            }
            let seen = Set(entries.map { "\($0.actor) \($0.action) \($0.tenantID)" })
            #expect(seen.isSuperset(of: [
                "officer:alice tenant.create \(a)", "officer:bob tenant.create \(b)",
                "frontend:demo webhook.secret \(a)", "frontend:demo webhook.secret \(b)",
            ]), "\(seen.sorted())")
        }
    }

    /// The certificate's serial as `openssl x509 -serial` prints it, lower-case hex.
    static func serial(_ path: String) throws -> String {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["x509", "-noout", "-serial", "-in", path]
        process.standardOutput = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return text.replacingOccurrences(of: "serial=", with: "").trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    }
}

import Composition
import CustosModel
import Foundation
import GRPCCore
import PostgresNIO
import RPC
@testable import Storage
import Testing

/// Attacks on the cross-instance notices (issue 13) by a database writer with the service role's
/// grants: it can cut the other instance's LISTEN connections (`pg_terminate_backend` works on
/// the backends of one's own role) and send any NOTIFY payload on Custos's channels. Two
/// instances over one schema, the second keeping its caches for a minute, so only the notices
/// (or their loss being noticed) can make it forget in time.
@Suite("High-availability attacks: notices cut or forged by a database writer", .serialized)
struct HighAvailabilityAttackTests {
    static let longCaches: (RPCSettings, VerificationGraph.Settings) = {
        var settings = RPCSettings()
        settings.authenticationCacheLifetime = .seconds(60)
        var verification = settings.verification
        verification.policyCacheLifetime = .seconds(60)
        return (settings, verification)
    }()

    /// Runs `query` on a connection of the service role (the attacker's grants).
    /// - Returns: how many rows it returned.
    @discardableResult
    static func asServiceRole(_ first: RPCHarness, _ query: PostgresQuery) async throws -> Int {
        let database = try first.custody.secondServiceDatabase()
        do {
            let rows = try await database.withTransaction(context: "attacker SQL") { connection in
                try await connection.query(query, logger: Database.quiet).collect().count
            }
            await database.shutdown()
            return rows
        } catch {
            await database.shutdown()
            throw error
        }
    }

    @Test("every cache-change listener cut by the database writer just before a revocation: B still refuses the revoked certificate within 1 s, and listens again")
    func listenerCutBeforeRevocation() async throws {
        let (settings, verification) = Self.longCaches
        try await RPCHarness.with("halistenercut") { first in
            try await SecondInstance.with(beside: first, settings: settings, verification: verification) { second in
                try await second.waitUntilListening()
                let bobSerial = try RPCAuthTests.serial(first.certificates.path("officer-bob.pem"))
                try await second.rpc.withClient(.bob) { bobOnB in
                    let adminOnB = Custos_V1_Admin.Client(wrapping: bobOnB)
                    // B caches the deny-list (for a minute) with bob not on it.
                    #expect(await RPCHarness.code { _ = try await adminOnB.listTenants(Custos_V1_ListTenantsRequest()) } == nil)
                    let cut = try await Self.asServiceRole(first, """
                        SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                        WHERE pid <> pg_backend_pid() AND query ILIKE \("%LISTEN%" + CacheChangeListener.channel + "%")
                        """)
                    #expect(cut > 0, "the attacker found the listeners to cut")
                    try await first.withClient(.alice) { client in
                        _ = try await Custos_V1_Admin.Client(wrapping: client).revokeCertificate(.with { $0.serial = bobSerial; $0.subject = "custos://officer/bob" })
                    }
                    #expect(try await TwoInstanceInvalidationTests.withinOneSecond {
                        await RPCHarness.code { _ = try await adminOnB.listTenants(Custos_V1_ListTenantsRequest()) } == .unauthenticated
                    }, "B refuses the certificate A revoked while B's listener was cut")
                }
                // The listener comes back by itself (backoff from 100 ms).
                try await second.waitUntilListening()
                #expect(second.services.graph.changes.isListening)
            }
        }
    }

    @Test("forged payloads on every notice channel neither stop B nor its listeners; a real change still reaches B within 1 s")
    func forgedPayloads() async throws {
        let (settings, verification) = Self.longCaches
        try await RPCHarness.with("haforged") { first in
            try await SecondInstance.with(beside: first, settings: settings, verification: verification) { second in
                try await second.waitUntilListening()
                let tenant = try await first.withClient(.alice) { client in
                    try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
                }
                let long = String(repeating: "x", count: 7_000)
                let payloads: [(String, String)] = [
                    (CacheChangeListener.channel, ""), (CacheChangeListener.channel, "tenant/"), (CacheChangeListener.channel, "policy/" + long),
                    (CacheChangeListener.channel, "certificates/extra"), (CacheChangeListener.channel, "tenant/\(tenant)/x"),
                    (CacheChangeListener.channel, "tenant/\(tenant.uppercased())"), (CacheChangeListener.channel, "\u{1F4A5}/\u{1F4A5}"),
                    (KeyVersionStore.stateChannel, ""), (KeyVersionStore.stateChannel, "/"), (KeyVersionStore.stateChannel, "a/b/c"),
                    (KeyVersionStore.stateChannel, String(repeating: "/", count: 1_000)),
                    (APIKeyStore.revocationChannel, ""), (APIKeyStore.revocationChannel, long),
                    (TemplateStore.galleryChannel, ""), (TemplateStore.galleryChannel, "||||"),
                    // The kinds as the service sends them (`GalleryChange.Kind`: e, m, x, r, c), so
                    // that each reaches the code that applies it (helper-71: spelt out, none did).
                    (TemplateStore.galleryChannel, "x|not-a-tenant|e|1|s"),
                    (TemplateStore.galleryChannel, "x|\(tenant)|e|99999999999999999999999|s"),
                    (TemplateStore.galleryChannel, "x|\(tenant)|m|-1|s"), (TemplateStore.galleryChannel, "x|\(tenant)|x|1|"),
                    (TemplateStore.galleryChannel, "x|\(tenant)|r|0|" + long), (TemplateStore.galleryChannel, "x|\(tenant)|c|0|" + long),
                    (TemplateStore.galleryChannel, "x|\(tenant)|e|\(Int.max)|" + long),
                ]
                for (channel, payload) in payloads {
                    try await Self.asServiceRole(first, "SELECT pg_notify(\(channel), \(payload))")
                }
                try await second.rpc.withClient(.frontend) { frontendOnB in
                    let ping: () async -> RPCError.Code? = {
                        await RPCHarness.code {
                            _ = try await Custos_V1_Verification.Client(wrapping: frontendOnB).ping(Custos_V1_PingRequest(), metadata: tenantMetadata(tenant))
                        }
                    }
                    #expect(await ping() == nil, "B serves")
                    #expect(second.isListening, "no payload cost B a listener")
                    try await first.withClient(.alice) { client in
                        _ = try await Custos_V1_Admin.Client(wrapping: client).disableTenant(.with { $0.tenantID = tenant })
                    }
                    #expect(try await TwoInstanceInvalidationTests.withinOneSecond { await ping() == .permissionDenied }, "B refuses the tenant A disabled")
                }
            }
        }
    }

    @Test("a disabled tenant set back to active in `tenants` by the database writer stays refused (the HSM's list holds the disable); the keyring's enable brings it back (helper-71)")
    func reenabledTenantStaysRefused() async throws {
        try await RPCHarness.with("hatenantback") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            let ping: () async -> RPCError.Code? = {
                await RPCHarness.code {
                    try await rpc.withClient(.frontend) { client in
                        _ = try await Custos_V1_Verification.Client(wrapping: client).ping(Custos_V1_PingRequest(), metadata: tenantMetadata(tenant))
                    }
                }
            }
            #expect(await ping() == nil)
            try await rpc.withClient(.alice) { client in
                _ = try await Custos_V1_Admin.Client(wrapping: client).disableTenant(.with { $0.tenantID = tenant })
            }
            #expect(await ping() == .permissionDenied)
            try await Self.asServiceRole(rpc, "UPDATE tenants SET status = 'active' WHERE id = \(tenant)::uuid")
            try await Self.asServiceRole(rpc, "SELECT pg_notify(\(CacheChangeListener.channel), \("tenant/" + tenant))")
            #expect(await ping() == .permissionDenied, "the row says active; the list still says disabled")
            let listed = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).listTenants(Custos_V1_ListTenantsRequest()).tenants.first { $0.tenantID == tenant }
            }
            #expect(listed?.disabled == true, "officers see it disabled too (helper-78)")
            let id = try #require(TenantID(tenant))
            #expect(try await rpc.custody.keyring.setTenantActive(id, true, actor: "officer"))
            #expect(await ping() == nil, "enabled again")
        }
    }

    @Test("ListTenants lists every tenant while one's active biometric version is disabled (helper-77: that tenant failed the whole list)")
    func listTenantsWithRefusedBiometricVersion() async throws {
        try await RPCHarness.with("halisttenants") { rpc in
            let (first, second) = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                return (try await admin.createTenant(.with { $0.label = "acme" }).tenant.tenantID, try await admin.createTenant(.with { $0.label = "globex" }).tenant.tenantID)
            }
            let id = try #require(TenantID(first))
            _ = try await rpc.custody.keyring.disable(id, .bioSeed, version: 1, actor: "officer")
            let listed = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).listTenants(Custos_V1_ListTenantsRequest()).tenants.map(\.tenantID)
            }
            #expect(Set(listed).isSuperset(of: [first, second]))
        }
    }
}

import HSMTestSupport
import CustosModel
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import Testing

/// docs/rpc.md §(a) and §(b): the server and client set-ups below are the documented ones.
@Suite("Mutual TLS and the caller's certificate in the handler")
struct MutualTLSTests {
    /// Server: its certificate and key; trust roots = our CA only; a client certificate REQUIRED.
    static func serverSecurity(_ certs: TestCertificates) -> HTTP2ServerTransport.Posix.TransportSecurity {
        .mTLS(
            certificateChain: [.file(path: certs.path("server.pem"), format: .pem)],
            privateKey: .file(path: certs.path("server.key"), format: .pem)
        ) { tls in
            // `.mTLS` defaults to the *system* trust roots: any public CA's client certificate
            // would pass. Trust our CA alone.
            tls.trustRoots = .certificates([.file(path: certs.path("ca.pem"), format: .pem)])
            // The default of `.mTLS`, spelled out: verify the chain (no hostname: clients have
            // none) and fail the handshake without a client certificate.
            tls.clientCertificateVerification = .noHostnameVerification
            tls.requireALPN = true
        }
    }

    /// Client: its certificate and key; trusts our CA for the server's certificate.
    static func clientSecurity(_ certs: TestCertificates, _ name: String) -> HTTP2ClientTransport.Posix.TransportSecurity {
        .mTLS(
            certificateChain: [.file(path: certs.path("\(name).pem"), format: .pem)],
            privateKey: .file(path: certs.path("\(name).key"), format: .pem)
        ) { tls in
            tls.trustRoots = .certificates([.file(path: certs.path("ca.pem"), format: .pem)])
            tls.serverCertificateVerification = .fullVerification
        }
    }

    /// The first RPC on a connection whose handshake fails: fail fast, with a deadline.
    static let failFast = CallOptions.defaults.with { $0.timeout = .seconds(10); $0.waitForReady = false }

    @Test("A front-end's certificate reaches the handler: subject and SAN URI, mapped to an identity")
    func frontEnd() async throws {
        let certs = try TestCertificates.get()
        try await withLoopbackServer(
            services: [EchoPeerAPIKeys()],
            interceptors: [PeerCertificateInterceptor()],
            serverSecurity: Self.serverSecurity(certs),
            clientSecurity: Self.clientSecurity(certs, "frontend-demo")
        ) { client in
            let seen = try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init())
            #expect(seen.keyID == "\(CallerCertificate.Role.frontend(name: "demo", tenants: .any))")
            #expect(seen.scopes == ["custos://frontend/demo", "custos://tenant/*"])
            #expect(seen.tenantID.contains("CN=custos frontend demo"))
        }
    }

    @Test("Two officers' certificates give two officer identities")
    func officers() async throws {
        let certs = try TestCertificates.get()
        for (name, officer) in [("officer-alice", "alice"), ("officer-bob", "bob")] {
            try await withLoopbackServer(
                services: [EchoPeerAPIKeys()],
                interceptors: [PeerCertificateInterceptor()],
                serverSecurity: Self.serverSecurity(certs),
                clientSecurity: Self.clientSecurity(certs, name)
            ) { client in
                let seen = try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init())
                #expect(seen.keyID == "\(CallerCertificate.Role.officer(name: officer))")
                #expect(seen.scopes == ["custos://officer/\(officer)"])
            }
        }
    }

    @Test("Without an interceptor a handler can read HTTP2ServerTransport.Posix.Context.peerCertificate itself")
    func rawTransportContext() async throws {
        let certs = try TestCertificates.get()
        try await withLoopbackServer(
            services: [EchoPeerAPIKeys()],
            serverSecurity: Self.serverSecurity(certs),
            clientSecurity: Self.clientSecurity(certs, "officer-alice")
        ) { client in
            let seen = try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init())
            #expect(seen.keyID == "raw transport context")
            #expect(seen.scopes == ["custos://officer/alice"])
        }
    }

    @Test("No client certificate: the handshake fails and no RPC runs")
    func noClientCertificate() async throws {
        let certs = try TestCertificates.get()
        let counter = CountingInterceptor()
        let noCertificate = HTTP2ClientTransport.Posix.TransportSecurity.tls { tls in
            tls.trustRoots = .certificates([.file(path: certs.path("ca.pem"), format: .pem)])
        }
        try await withLoopbackServer(
            services: [EchoPeerAPIKeys()],
            interceptors: [counter, PeerCertificateInterceptor()],
            serverSecurity: Self.serverSecurity(certs),
            clientSecurity: noCertificate
        ) { client in
            let error = await #expect(throws: RPCError.self) {
                try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init(), options: Self.failFast)
            }
            #expect(error?.code == .unavailable)
            #expect(counter.count.load(ordering: .relaxed) == 0)
        }
    }

    @Test("A certificate from another CA, even with a Custos SAN URI, fails the handshake")
    func otherCA() async throws {
        let certs = try TestCertificates.get()
        let counter = CountingInterceptor()
        try await withLoopbackServer(
            services: [EchoPeerAPIKeys()],
            interceptors: [counter, PeerCertificateInterceptor()],
            serverSecurity: Self.serverSecurity(certs),
            clientSecurity: Self.clientSecurity(certs, "other-client")
        ) { client in
            let error = await #expect(throws: RPCError.self) {
                try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init(), options: Self.failFast)
            }
            #expect(error?.code == .unavailable)
            #expect(counter.count.load(ordering: .relaxed) == 0)
        }
    }

    @Test("The server's own certificate (serverAuth only) is refused as a client certificate")
    func serverCertificateAsClient() async throws {
        let certs = try TestCertificates.get()
        let counter = CountingInterceptor()
        try await withLoopbackServer(
            services: [EchoPeerAPIKeys()],
            interceptors: [counter, PeerCertificateInterceptor()],
            serverSecurity: Self.serverSecurity(certs),
            clientSecurity: Self.clientSecurity(certs, "server")
        ) { client in
            let error = await #expect(throws: RPCError.self) {
                try await Custos_V1_APIKeys.Client(wrapping: client).whoAmI(.init(), options: Self.failFast)
            }
            #expect(error?.code == .unavailable)
            #expect(counter.count.load(ordering: .relaxed) == 0)
        }
    }

    @Test("The identity mapping: one officer, or one front-end with its tenants, or a single tenant; anything else names no one")
    func identityMapping() {
        let tenant = TenantID("0f8fad5b-d9cb-469f-a165-70867728950e")!
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/alice"]) == .officer(name: "alice"))
        #expect(CallerCertificate.role(fromURIs: ["custos://frontend/demo", "custos://tenant/*", "https://example.com"]) == .frontend(name: "demo", tenants: .any))
        #expect(CallerCertificate.role(fromURIs: ["custos://frontend/demo", "custos://tenant/\(tenant)"]) == .frontend(name: "demo", tenants: .only([tenant])))
        #expect(CallerCertificate.role(fromURIs: ["custos://tenant/\(tenant)"]) == .frontend(name: "tenant-\(tenant)", tenants: .only([tenant])))
        #expect(CallerCertificate.role(fromURIs: ["custos://frontend/demo"]) == nil, "a front-end must name the tenants it serves")
        #expect(CallerCertificate.role(fromURIs: []) == nil)
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/alice", "custos://officer/bob"]) == nil, "two identities: refused")
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/alice", "custos://frontend/demo", "custos://tenant/*"]) == nil)
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/alice", "custos://tenant/*"]) == nil, "an officer serves no tenant")
        #expect(CallerCertificate.role(fromURIs: ["custos://tenant/not-a-uuid"]) == nil)
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/"]) == nil)
        #expect(CallerCertificate.role(fromURIs: ["custos://officer/alice/extra"]) == nil)
        #expect(CallerCertificate.role(fromURIs: ["custos://root/alice"]) == nil)
    }
}

extension CallOptions {
    func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }
}

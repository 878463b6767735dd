import CustosModel
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSMTestSupport
import RPC
import Testing

/// The production server transport (`CustosServer.transport`, the one `custos serve` runs)
/// with real certificates from `scripts/make-ca`, in front of the health service: what the TLS
/// handshake lets through and what the transport tells the interceptor chain about the caller.
/// Needs no database; the whole production path — `AuthenticationInterceptor` and
/// `Authenticator` to the handler — is in Tests/PostgresIntegrationTests/RPC/RPCAuthTests.
@Suite("Mutual TLS: the handshake and the caller's certificate")
struct MutualTLSTests {
    static func endpoint(_ certs: TestCertificates) -> ServerEndpoint {
        ServerEndpoint(host: "127.0.0.1", port: 0, tls: .init(
            certificateChain: certs.path("server.pem"), privateKey: certs.path("server.key"), clientCA: certs.path("ca.pem")
        ))
    }

    /// Client: the production set-up (`RPCClientTLS`) with `name`'s certificate and key.
    static func clientSecurity(_ certs: TestCertificates, _ name: String) -> HTTP2ClientTransport.Posix.TransportSecurity {
        RPCClientTLS(certificateChain: certs.path("\(name).pem"), privateKey: certs.path("\(name).key"), serverCA: certs.path("ca.pem")).transportSecurity
    }

    /// The first RPC on a connection whose handshake fails: fail fast, with a deadline.
    static let failFast = CallOptions.defaults.with { $0.timeout = .seconds(10); $0.waitForReady = false }

    /// One health check as `name` (a certificate of scripts/make-ca) against the production
    /// transport; returns what the interceptor chain saw.
    static func check(
        as security: HTTP2ClientTransport.Posix.TransportSecurity, _ certs: TestCertificates, options: CallOptions = .defaults
    ) async throws -> [PeerRecorder.Seen] {
        let recorder = PeerRecorder()
        try await withLoopbackServer(
            transport: try CustosServer.transport(endpoint(certs)),
            services: [HealthService(registry: HealthStatusRegistry())],
            interceptors: [recorder],
            clientSecurity: security
        ) { client in
            _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = "" }, options: options)
        }
        return recorder.seen.withLock { $0 }
    }

    @Test("A front-end's certificate reaches the interceptor chain: subject, SAN URIs, and the front-end role read from them")
    func frontEnd() async throws {
        let certs = try TestCertificates.get()
        let seen = try await Self.check(as: Self.clientSecurity(certs, "frontend-demo"), certs)
        #expect(seen.count == 1)
        #expect(seen.first?.role == .frontend(name: "demo", tenants: .any))
        #expect(seen.first?.uris == ["custos://frontend/demo", "custos://tenant/*"])
        #expect(seen.first?.subject?.contains("CN=custos frontend demo") == true)
    }

    @Test("Two officers' certificates give two officer roles")
    func officers() async throws {
        let certs = try TestCertificates.get()
        for (name, officer) in [("officer-alice", "alice"), ("officer-bob", "bob")] {
            let seen = try await Self.check(as: Self.clientSecurity(certs, name), certs)
            #expect(seen.first?.role == .officer(name: officer))
            #expect(seen.first?.uris == ["custos://officer/\(officer)"])
        }
    }

    @Test("No client certificate: the handshake fails and no RPC runs")
    func noClientCertificate() async throws {
        let certs = try TestCertificates.get()
        let noCertificate = HTTP2ClientTransport.Posix.TransportSecurity.tls { tls in
            tls.trustRoots = .certificates([.file(path: certs.path("ca.pem"), format: .pem)])
        }
        try await Self.expectRefused(noCertificate, certs)
    }

    @Test("A certificate from another CA, even with a Custos SAN URI, fails the handshake")
    func otherCA() async throws {
        let certs = try TestCertificates.get()
        try await Self.expectRefused(Self.clientSecurity(certs, "other-client"), certs)
    }

    @Test("The server's own certificate (serverAuth only) is refused as a client certificate")
    func serverCertificateAsClient() async throws {
        let certs = try TestCertificates.get()
        try await Self.expectRefused(Self.clientSecurity(certs, "server"), certs)
    }

    /// The handshake refuses the client: it sees UNAVAILABLE, and no RPC reaches an interceptor.
    static func expectRefused(_ security: HTTP2ClientTransport.Posix.TransportSecurity, _ certs: TestCertificates) async throws {
        let counter = CountingInterceptor()
        try await withLoopbackServer(
            transport: try CustosServer.transport(endpoint(certs)),
            services: [HealthService(registry: HealthStatusRegistry())],
            interceptors: [counter],
            clientSecurity: security
        ) { client in
            let error = await #expect(throws: RPCError.self) {
                try await Grpc_Health_V1_Health.Client(wrapping: client).check(.with { $0.service = "" }, options: Self.failFast)
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

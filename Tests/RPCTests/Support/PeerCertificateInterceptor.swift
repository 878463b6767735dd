// docs/rpc.md §(b): reading the verified client certificate in a handler. Compiled and used by
// MutualTLSTests, so the documented code is the tested code. When the handlers land, this moves
// into the RPC target (with X509 and GRPCNIOTransportHTTP2Posix as its dependencies).
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import X509

/// What a verified client certificate says: the parts Custos maps to an identity.
struct PeerCertificate: Sendable, Equatable {
    /// The subject distinguished name, e.g. `CN=custos officer alice,O=Custos`.
    let subject: String
    /// The SAN URIs, e.g. `custos://officer/alice`.
    let uris: [String]
    /// The serial number as hex bytes (what a deny-list of revoked certificates names).
    let serialNumber: String

    init(_ certificate: Certificate) throws {
        self.subject = certificate.subject.description
        self.serialNumber = certificate.serialNumber.description
        let names = try certificate.extensions.subjectAlternativeNames.map(Array.init) ?? []
        self.uris = names.compactMap { name in
            if case .uniformResourceIdentifier(let uri) = name { uri } else { nil }
        }
    }
}

/// What the interceptor hands to the handlers in `ServerContext.transportSpecific`, in place
/// of the transport's own context: the certificate, already parsed, and the identity.
struct AuthenticatedPeer: ServerContext.TransportSpecific {
    let certificate: PeerCertificate
    let identity: CallerCertificate.Role
}

/// Reads the client certificate that the TLS handshake verified (grpc-swift-nio-transport puts
/// it in `ServerContext.transportSpecific` as `HTTP2ServerTransport.Posix.Context`), maps its
/// SAN URIs to a `CallerCertificate.Role` (the production rules) and passes it on in the context. No certificate, or one
/// that names no single Custos identity: UNAUTHENTICATED, and no handler runs.
///
/// The context is a value passed to `next`, so the identity reaches unary and streaming
/// handlers alike (a task-local would not: a streaming response body runs after `intercept`
/// has returned).
struct PeerCertificateInterceptor: ServerInterceptor {
    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        guard let tls = context.transportSpecific as? HTTP2ServerTransport.Posix.Context,
              let leaf = tls.peerCertificate
        else {
            throw RPCError(code: .unauthenticated, message: "a client certificate is required")
        }
        let certificate: PeerCertificate
        do {
            certificate = try PeerCertificate(leaf)
        } catch {
            throw RPCError(code: .unauthenticated, message: "unreadable client certificate")
        }
        guard let identity = CallerCertificate.role(fromURIs: certificate.uris) else {
            throw RPCError(code: .unauthenticated, message: "the client certificate names no Custos identity")
        }
        var context = context
        context.transportSpecific = AuthenticatedPeer(certificate: certificate, identity: identity)
        return try await next(request, context)
    }
}

extension ServerContext {
    /// The peer that ``PeerCertificateInterceptor`` authenticated, if it ran.
    var authenticatedPeer: AuthenticatedPeer? {
        transportSpecific as? AuthenticatedPeer
    }
}

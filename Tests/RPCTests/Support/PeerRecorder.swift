import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import Synchronization
import X509

/// Records, for each RPC that reaches the interceptor chain, what the transport handed over of
/// the client's certificate and the role that the production ``CallerCertificate`` reads from
/// it — an observer in front of the handler, not an authentication path: it refuses nothing.
final class PeerRecorder: ServerInterceptor {
    struct Seen: Sendable, Equatable {
        /// The subject distinguished name, e.g. `CN=custos officer alice,O=Custos`.
        var subject: String?
        /// The SAN URIs, e.g. `custos://officer/alice`.
        var uris: [String]
        /// What `CallerCertificate(verifiedPeerOf:)` — the production interceptor's reading — made of it.
        var role: CallerCertificate.Role?
    }

    let seen = Mutex<[Seen]>([])

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let leaf = (context.transportSpecific as? HTTP2ServerTransport.Posix.Context)?.peerCertificate
        let names: [GeneralName] = if let leaf, let san = try? leaf.extensions.subjectAlternativeNames { Array(san) } else { [] }
        let uris = names.compactMap { name -> String? in
            if case .uniformResourceIdentifier(let uri) = name { uri } else { nil }
        }
        let entry = Seen(subject: leaf?.subject.description, uris: uris, role: CallerCertificate(verifiedPeerOf: context)?.role)
        seen.withLock { $0.append(entry) }
        return try await next(request, context)
    }
}

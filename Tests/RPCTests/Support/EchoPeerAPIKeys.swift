import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC

/// A test double of `custos.v1.APIKeys` whose `WhoAmI` echoes what the handler saw of the
/// caller's certificate: key_id = the identity, tenant_id = the subject, scopes = the SAN URIs.
/// With ``PeerCertificateInterceptor`` in front it reads ``AuthenticatedPeer``; without, the
/// transport's raw `HTTP2ServerTransport.Posix.Context`.
struct EchoPeerAPIKeys: Custos_V1_APIKeys.SimpleServiceProtocol {
    func whoAmI(request: Custos_V1_WhoAmIRequest, context: ServerContext) async throws -> Custos_V1_WhoAmIResponse {
        if let peer = context.authenticatedPeer {
            return .with {
                $0.keyID = "\(peer.identity)"
                $0.tenantID = peer.certificate.subject
                $0.scopes = peer.certificate.uris
            }
        }
        guard let tls = context.transportSpecific as? HTTP2ServerTransport.Posix.Context,
              let leaf = tls.peerCertificate
        else {
            return .with { $0.keyID = "no certificate" }
        }
        let certificate = try PeerCertificate(leaf)
        return .with {
            $0.keyID = "raw transport context"
            $0.tenantID = certificate.subject
            $0.scopes = certificate.uris
        }
    }

    func listKeys(request: Custos_V1_ListKeysRequest, context: ServerContext) async throws -> Custos_V1_ListKeysResponse {
        throw RPCError(code: .unimplemented, message: "test double")
    }

    func revokeKey(request: Custos_V1_RevokeKeyRequest, context: ServerContext) async throws -> Custos_V1_RevokeKeyResponse {
        throw RPCError(code: .unimplemented, message: "test double")
    }
}

public import Custody
import Storage
public import GRPCCore
import SwiftProtobuf

/// `custos.v1.APIKeys`: what a tenant may see and do with its own API keys.
public struct APIKeysHandler: Custos_V1_APIKeys.SimpleServiceProtocol {
    let apiKeys: APIKeyService

    public init(apiKeys: APIKeyService) { self.apiKeys = apiKeys }

    public func whoAmI(request: Custos_V1_WhoAmIRequest, context: ServerContext) async throws -> Custos_V1_WhoAmIResponse {
        let tenant = try Caller.requireTenant()
        guard case .tenant(_, .apiKey(let keyID, let scopes)) = Caller.current?.kind else {
            throw RPCError(code: .failedPrecondition, message: "this call carries no API key to describe (it was made with a certificate)")
        }
        return .with {
            $0.tenantID = tenant.rawValue
            $0.keyID = keyID
            $0.scopes = scopes
        }
    }

    public func listKeys(request: Custos_V1_ListKeysRequest, context: ServerContext) async throws -> Custos_V1_ListKeysResponse {
        let tenant = try Caller.requireTenant()
        let keys = try await apiKeys.list(tenant: tenant)
        return .with { $0.keys = keys.map(Self.info) }
    }

    public func revokeKey(request: Custos_V1_RevokeKeyRequest, context: ServerContext) async throws -> Custos_V1_RevokeKeyResponse {
        let tenant = try Caller.requireTenant()
        let keyID = try RequestFields.apiKeyID(request.keyID)
        do {
            guard try await apiKeys.revoke(tenant: tenant, keyID: keyID, actor: Caller.current?.actor ?? "tenant") else {
                throw RPCError(code: .notFound, message: "no API key \(keyID) in this tenant")
            }
            return .with { $0.revoked = true }
        } catch APIKeyError.alreadyRevoked {
            // The proto's contract: a revocation sent again succeeds, saying it changed nothing.
            return .with { $0.revoked = false }
        }
    }

    static func info(_ record: APIKeyRecord) -> Custos_V1_APIKeyInfo {
        .with {
            $0.keyID = record.keyID
            $0.tenantID = record.tenant.rawValue
            $0.scopes = record.scopes
            $0.label = record.label
            if let at = record.createdAt { $0.createdAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.expiresAt { $0.expiresAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.lastUsedAt { $0.lastUsedAt = Google_Protobuf_Timestamp(date: at) }
            if let at = record.revokedAt { $0.revokedAt = Google_Protobuf_Timestamp(date: at) }
            $0.pepperVersion = UInt32(record.pepperVersion)
        }
    }
}

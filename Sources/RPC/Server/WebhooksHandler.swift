public import Custody
import CustosModel
import Foundation
public import GRPCCore
import SwiftProtobuf
public import Verification

/// `custos.v1.Webhooks`. Not an open signing oracle (DESIGN §8): a caller names one of its own
/// sessions and an event type, and the service writes the body itself from what it holds, so
/// no caller-chosen bytes are ever signed with a tenant's key.
public struct WebhooksHandler: Custos_V1_Webhooks.SimpleServiceProtocol {
    let signer: WebhookSigner
    let keyring: TenantKeyring
    let sessions: VerificationSessions

    public init(signer: WebhookSigner, keyring: TenantKeyring, sessions: VerificationSessions) {
        self.signer = signer
        self.keyring = keyring
        self.sessions = sessions
    }

    public func signDelivery(request: Custos_V1_SignDeliveryRequest, context: ServerContext) async throws -> Custos_V1_SignDeliveryResponse {
        let tenant = try Caller.requireTenant()
        let session = try RequestFields.uuid(request.sessionID, field: "session_id")
        let status = try await sessions.status(tenant: tenant, session: session)
        let type: String
        switch request.eventType {
        case .sessionConsented:
            guard status.consentedAt != nil else { throw RPCError(code: .failedPrecondition, message: "session has no consent to report") }
            type = "verification.session.consented"
        case .sessionCompleted:
            guard status.state == .completed else { throw RPCError(code: .failedPrecondition, message: "session is not completed") }
            type = "verification.session.completed"
        case .sessionExpired:
            guard status.state == .expired else { throw RPCError(code: .failedPrecondition, message: "session has not expired") }
            type = "verification.session.expired"
        case .unspecified, .UNRECOGNIZED:
            throw RPCError(code: .invalidArgument, message: "event_type is required (e.g. WEBHOOK_EVENT_TYPE_SESSION_COMPLETED)")
        }
        let now = Date()
        let body = try Self.body(type: type, status: status, at: now)
        let id = "msg_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let timestamp = Int64(now.timeIntervalSince1970)
        let signature = try await signer.signatureHeader(tenant: tenant, id: id, timestamp: timestamp, body: body)
        return .with {
            $0.messageID = id
            $0.timestamp = timestamp
            $0.body = Data(body)
            $0.signature = signature
        }
    }

    /// The event as JSON: ids, state and decision colour only.
    static func body(type: String, status: SessionStatus, at: Date) throws -> [UInt8] {
        struct Event: Encodable {
            let type: String
            let timestamp: Date
            let data: [String: String]
        }
        var data = ["session_id": status.id.uuidString.lowercased(), "state": status.state.rawValue]
        if let outcome = status.outcome { data["outcome"] = outcome.rawValue }
        if let confidence = status.confidence { data["confidence"] = confidence.rawValue }
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(Event(type: type, timestamp: at, data: data)))
    }

    public func createSecret(request: Custos_V1_CreateSecretRequest, context: ServerContext) async throws -> Custos_V1_CreateSecretResponse {
        let tenant = try Caller.requireTenant()
        let (version, secret) = try await signer.createSecret(tenant: tenant, actor: Caller.current?.actor ?? "tenant")
        return .with {
            $0.version = UInt32(version)
            $0.secret = secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        }
    }

    public func createEd25519Key(request: Custos_V1_CreateEd25519KeyRequest, context: ServerContext) async throws -> Custos_V1_CreateEd25519KeyResponse {
        let tenant = try Caller.requireTenant()
        let (version, publicKey) = try await signer.createEd25519Key(tenant: tenant, actor: Caller.current?.actor ?? "tenant")
        return .with {
            $0.version = UInt32(version)
            $0.publicKey = publicKey
        }
    }

    public func rotate(request: Custos_V1_RotateRequest, context: ServerContext) async throws -> Custos_V1_RotateResponse {
        let tenant = try Caller.requireTenant()
        let overlap = Duration.seconds(Int(request.hasOverlapSeconds ? request.overlapSeconds : 86_400))
        guard !request.hasOverlapSeconds || request.overlapSeconds <= 7 * 86_400 else {
            throw RPCError(code: .invalidArgument, message: "overlap_seconds is at most 604800 (7 days)")
        }
        let actor = Caller.current?.actor ?? "tenant"
        switch request.purpose {
        case .webhook:
            let (version, secret) = try await signer.createSecret(tenant: tenant, overlap: overlap, actor: actor)
            return .with {
                $0.version = UInt32(version)
                $0.secret = secret.withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            }
        case .webhookEd25519:
            let (version, publicKey) = try await signer.createEd25519Key(tenant: tenant, overlap: overlap, actor: actor)
            return .with {
                $0.version = UInt32(version)
                $0.publicKey = publicKey
            }
        default:
            throw RPCError(code: .invalidArgument, message: "purpose must be KEY_PURPOSE_WEBHOOK or KEY_PURPOSE_WEBHOOK_ED25519")
        }
    }

    public func publicKeys(request: Custos_V1_PublicKeysRequest, context: ServerContext) async throws -> Custos_V1_PublicKeysResponse {
        let tenant = try Caller.requireTenant()
        let versions = try await keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 && $0.publicKey != nil && $0.state != .destroyed }
        return .with {
            $0.keys = versions.sorted { $0.version > $1.version }.map { record in
                .with {
                    $0.version = UInt32(record.version)
                    $0.state = RequestFields.state(record.state)
                    $0.publicKey = StandardWebhooks.encodePublicKey(record.publicKey!)
                    if record.state == .retiring, let until = record.retiringUntil { $0.retiringUntil = Google_Protobuf_Timestamp(date: until) }
                    // Listed ACTIVE with nothing else, a disabled version read as one Custos
                    // signs with (helper-91).
                    if let at = record.disabledAt { $0.disabledAt = Google_Protobuf_Timestamp(date: at) }
                    if let due = record.destructionDueAt { $0.destructionDueAt = Google_Protobuf_Timestamp(date: due) }
                }
            }
        }
    }
}

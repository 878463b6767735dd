public import Composition
import CustosModel
import Foundation
public import GRPCCore
import SwiftProtobuf
import Tokenization
import Verification

/// `custos.v1.Verification`: sessions, consent, and features in → decisions out. No answer
/// holds a token, a score, a name or an email.
public struct VerificationHandler: Custos_V1_Verification.SimpleServiceProtocol {
    let flow: BiometricVerification
    /// The privacy notice candidates consent to; RecordConsent must name it.
    let noticeVersion: String

    public init(flow: BiometricVerification, noticeVersion: String) {
        self.flow = flow
        self.noticeVersion = noticeVersion
    }

    public func createSession(request: Custos_V1_CreateSessionRequest, context: ServerContext) async throws -> Custos_V1_CreateSessionResponse {
        let tenant = try Caller.requireTenant()
        let created = try await flow.sessions.create(
            tenant: tenant, externalID: PersonalText(request.subjectExternalID),
            name: request.candidateName.isEmpty ? nil : PersonalText(request.candidateName),
            email: request.candidateEmail.isEmpty ? nil : PersonalText(request.candidateEmail)
        )
        return .with {
            $0.sessionID = created.id.uuidString.lowercased()
            $0.gatewayLink = created.gatewayLink.value
            $0.expiresAt = Google_Protobuf_Timestamp(date: created.expiresAt)
        }
    }

    public func openGateway(request: Custos_V1_OpenGatewayRequest, context: ServerContext) async throws -> Custos_V1_OpenGatewayResponse {
        let tenant = try Caller.requireTenant()
        let status = try await flow.sessions.openGatewayStatus(tenant: tenant, link: try GatewayLink(request.gatewayLink))
        return .with {
            $0.sessionID = status.id.uuidString.lowercased()
            $0.noticeVersion = noticeVersion
            $0.expiresAt = Google_Protobuf_Timestamp(date: status.expiresAt)
        }
    }

    public func recordConsent(request: Custos_V1_RecordConsentRequest, context: ServerContext) async throws -> Custos_V1_RecordConsentResponse {
        let tenant = try Caller.requireTenant()
        let session = try RequestFields.uuid(request.sessionID, field: "session_id")
        guard request.noticeVersion == noticeVersion else {
            throw RPCError(code: .invalidArgument, message: "notice_version must be the notice shown to the candidate: \(noticeVersion)")
        }
        let at = try await flow.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: request.noticeVersion)
        return .with { $0.consentedAt = Google_Protobuf_Timestamp(date: at) }
    }

    public func getSession(request: Custos_V1_GetSessionRequest, context: ServerContext) async throws -> Custos_V1_GetSessionResponse {
        let tenant = try Caller.requireTenant()
        let status = try await flow.sessions.status(tenant: tenant, session: try RequestFields.uuid(request.sessionID, field: "session_id"))
        return .with {
            $0.sessionID = status.id.uuidString.lowercased()
            $0.status = switch status.state {
            case .created: .created
            case .opened: .opened
            case .consented: .consented
            case .completed: .completed
            case .expired: .expired
            }
            switch status.outcome {
            case .enrolled: $0.outcome = .enrolled
            case .noMatch: $0.outcome = .noMatch
            case .green, .amber, .red:
                $0.outcome = .decided
                $0.result = .with {
                    $0.color = status.outcome == .green ? .green : status.outcome == .amber ? .amber : .red
                    $0.confidence = RequestFields.confidence(status.confidence)
                }
            case nil: break
            }
            $0.createdAt = Google_Protobuf_Timestamp(date: status.createdAt)
            $0.expiresAt = Google_Protobuf_Timestamp(date: status.expiresAt)
            if let at = status.consentedAt { $0.consentedAt = Google_Protobuf_Timestamp(date: at) }
            if let at = status.completedAt { $0.completedAt = Google_Protobuf_Timestamp(date: at) }
            $0.noticeVersion = status.noticeVersion ?? ""
            $0.keyVersion = UInt32(status.biometricKeyVersion ?? 0)
        }
    }

    /// Request metadata that allows Enrol to replace an enrolled subject's template: `true`
    /// (anything else but `false` is refused). Metadata rather than a request field, so the
    /// generated code did not have to change; a field can replace it at the next proto change.
    public static let reenrolMetadataKey = "custos-reenrol"

    /// The full form of Enrol, to read ``reenrolMetadataKey``.
    public func enrol(request: ServerRequest<Custos_V1_EnrolRequest>, context: ServerContext) async throws -> ServerResponse<Custos_V1_EnrolResponse> {
        let flag = request.metadata[stringValues: Self.reenrolMetadataKey].first(where: { _ in true })
        let replacing: Bool
        switch flag {
        case nil, "false": replacing = false
        case "true": replacing = true
        default: throw RPCError(code: .invalidArgument, message: "\(Self.reenrolMetadataKey) must be 'true' or 'false'")
        }
        return ServerResponse(message: try await enrol(request.message, replacing: replacing), metadata: [:])
    }

    public func enrol(request: Custos_V1_EnrolRequest, context: ServerContext) async throws -> Custos_V1_EnrolResponse {
        try await enrol(request, replacing: false)
    }

    private func enrol(_ request: Custos_V1_EnrolRequest, replacing: Bool) async throws -> Custos_V1_EnrolResponse {
        let tenant = try Caller.requireTenant()
        let session = try RequestFields.uuid(request.sessionID, field: "session_id")
        let features = try FeatureVector(request.features)
        let enrolled = try await flow.enrol(
            tenant: tenant, session: session, features: features, replacing: replacing, actor: Caller.current?.actor ?? "custos"
        )
        return .with {
            $0.subjectReference = enrolled.subject.value
            $0.keyVersion = UInt32(enrolled.keyVersion)
        }
    }

    public func verify(request: Custos_V1_VerifyRequest, context: ServerContext) async throws -> Custos_V1_VerifyResponse {
        let tenant = try Caller.requireTenant()
        let session = try RequestFields.uuid(request.sessionID, field: "session_id")
        let decision = try await flow.verify(tenant: tenant, session: session, features: try FeatureVector(request.features))
        return .with { $0.decision = RequestFields.decision(decision) }
    }

    public func identify(request: Custos_V1_IdentifyRequest, context: ServerContext) async throws -> Custos_V1_IdentifyResponse {
        let tenant = try Caller.requireTenant()
        let session = try RequestFields.uuid(request.sessionID, field: "session_id")
        guard (1...20).contains(request.top) else { throw RPCError(code: .invalidArgument, message: "top must be between 1 and 20") }
        let candidates = try await flow.identify(tenant: tenant, session: session, features: try FeatureVector(request.features), top: Int(request.top))
        return .with {
            $0.candidates = candidates.filter { $0.decision.color != .red }.map { candidate in
                .with {
                    $0.subjectReference = candidate.subject
                    $0.decision = RequestFields.decision(candidate.decision)
                }
            }
        }
    }

    public func ping(request: Custos_V1_PingRequest, context: ServerContext) async throws -> Custos_V1_PingResponse {
        _ = try Caller.requireTenant()
        return Custos_V1_PingResponse()
    }
}

import CustosModel
import Foundation
import GRPCCore
import Verification

/// Parsing of request fields, each refusal naming the field (INVALID_ARGUMENT).
enum RequestFields {
    static func uuid(_ text: String, field: String) throws -> UUID {
        guard text.utf8.count == 36, let id = UUID(uuidString: text) else {
            throw RPCError(code: .invalidArgument, message: "\(field) is not a UUID")
        }
        return id
    }

    static func tenant(_ text: String) throws -> TenantID {
        do {
            return try TenantID.parse(text)
        } catch {
            throw RPCError(code: .invalidArgument, message: "tenant_id is \(error)")
        }
    }

    static func decision(_ decision: Decision) -> Custos_V1_Decision {
        .with {
            $0.color = switch decision.color {
            case .green: .green
            case .amber: .amber
            case .red: .red
            }
            $0.confidence = confidence(decision.confidence)
        }
    }

    static func confidence(_ confidence: Decision.Confidence?) -> Custos_V1_Confidence {
        switch confidence {
        case .low: .low
        case .medium: .medium
        case .high: .high
        case nil: .unspecified
        }
    }

    static func purpose(_ purpose: Custos_V1_KeyPurpose) throws -> KeyPurpose {
        guard let purpose = KeyPurpose(wire: purpose) else {
            throw RPCError(code: .invalidArgument, message: "purpose is required (e.g. KEY_PURPOSE_DATA)")
        }
        return purpose
    }

    static func purpose(_ purpose: KeyPurpose) -> Custos_V1_KeyPurpose { purpose.wire }

    static func state(_ state: KeyState) -> Custos_V1_KeyState { state.wire }
}

extension Caller {
    /// The tenant this call is scoped to (the interceptor guarantees one on tenant services).
    static func requireTenant() throws -> TenantID {
        guard let tenant = current?.tenant else { throw RPCError(code: .unauthenticated, message: "no tenant-scoped caller") }
        return tenant
    }

    static func requireOfficer() throws -> String {
        guard case .officer(let name) = current?.kind else { throw RPCError(code: .permissionDenied, message: "Admin calls need an officer certificate") }
        return name
    }
}

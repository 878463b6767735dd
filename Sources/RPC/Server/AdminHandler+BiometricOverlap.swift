import Custody
import CustosModel
import Foundation
public import GRPCCore
import SwiftProtobuf

// Ending a biometric rotation's overlap early: two officers, the approval and the end in one
// transaction (BiometricOverlapEndApprovals).
extension AdminHandler {
    public func requestBiometricOverlapEnd(
        request: Custos_V1_RequestBiometricOverlapEndRequest, context: ServerContext
    ) async throws -> Custos_V1_RequestBiometricOverlapEndResponse {
        let actor = try officer()
        let id = try RequestFields.tenant(request.tenantID)
        guard try await deps.keyring.tenant(id) != nil else { throw RPCError(code: .notFound, message: "unknown tenant \(id)") }
        let row = try await deps.overlapEnds.request(id, version: Int(request.version), officer: actor)
        return .with {
            $0.requestID = row.id.uuidString.lowercased()
            $0.expiresAt = Google_Protobuf_Timestamp(date: row.expiresAt)
        }
    }

    public func approveBiometricOverlapEnd(
        request: Custos_V1_ApproveBiometricOverlapEndRequest, context: ServerContext
    ) async throws -> Custos_V1_ApproveBiometricOverlapEndResponse {
        let actor = try officer()
        let serial = try approverSerial()
        let (row, dropped) = try await deps.overlapEnds.approve(
            try RequestFields.uuid(request.requestID, field: "request_id"), officer: actor, certificateSerial: serial
        )
        let record = try await deps.keyring.versions(row.tenant).first { $0.purpose == .bioSeed && $0.version == row.version }
        return .with {
            $0.templatesDropped = UInt64(dropped)
            if let record { $0.key = Self.keyVersion(record) }
        }
    }
}

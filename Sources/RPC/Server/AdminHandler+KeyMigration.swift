import Custody
import CustosModel
import Foundation
public import GRPCCore
import Logging
import SwiftProtobuf
import Verification

// Watching migration (`KeyStatus`) and re-sealing (`ResealKeys`): how old key versions reach
// zero references.
extension AdminHandler {
    public func keyStatus(request: Custos_V1_KeyStatusRequest, context: ServerContext) async throws -> Custos_V1_KeyStatusResponse {
        _ = try Caller.requireOfficer()
        let id = try RequestFields.tenant(request.tenantID)
        let (versions, purposes) = try await deps.keyring.status(id)
        return .with { response in
            response.versions = versions.map { status in
                .with {
                    $0.key = Self.keyVersion(status.record)
                    $0.templates = UInt64(status.templates)
                    $0.sealedRecords = UInt64(status.sealedRecords)
                    $0.sessions = UInt64(status.sessions)
                    $0.apiKeys = UInt64(status.apiKeys)
                    $0.references = UInt64(status.references)
                    $0.signing = status.signing
                    switch status.listed {
                    case nil: $0.listed = .unspecified
                    case .destroyed: $0.listed = .destroyed
                    case .tenantOffboarding: $0.listed = .tenantOffboarding
                    case .disabled: $0.listed = .disabled
                    case .destructionScheduled(let due):
                        $0.listed = .destructionScheduled
                        $0.listedDestructionDueAt = Google_Protobuf_Timestamp(date: due)
                    }
                }
            }
            response.purposes = purposes.map { migration in
                .with {
                    $0.purpose = RequestFields.purpose(migration.purpose)
                    $0.activeVersion = UInt32(migration.activeVersion ?? 0)
                    $0.storedValues = UInt64(migration.storedValues)
                    $0.underActive = UInt64(migration.underActive)
                    $0.percentMigrated = migration.percentMigrated
                }
            }
        }
    }

    /// Implemented at the streaming level, not the simple one: a simple streaming handler's
    /// body runs after the interceptor has returned — without the caller, the status mapping or
    /// the cancellation bridge. So the request is checked here, inside the interceptor, and
    /// the producer maps its own errors and stops when the RPC is cancelled (the batch in
    /// flight rolls back; committed batches stay).
    public func resealKeys(
        request: ServerRequest<Custos_V1_ResealKeysRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<Custos_V1_ResealKeysProgress> {
        let actor = "officer:" + (try Caller.requireOfficer())
        let message = request.message
        let id = try RequestFields.tenant(message.tenantID)
        guard try await deps.keyring.tenant(id) != nil else { throw RPCError(code: .notFound, message: "unknown tenant \(id)") }
        switch KeyPurpose(wire: message.purpose) {
        case .data:
            break
        case nil:
            throw RPCError(code: .invalidArgument, message: "purpose: DATA (the only purpose with sealed records)")
        case let other?:
            throw RPCError(code: .invalidArgument, message: "purpose: only data is re-sealed (\(other.rawValue): "
                + Self.howItMigrates(other) + ")")
        }
        let batchSize = message.batchSize == 0 ? SessionResealJob.defaultBatchSize : Int(message.batchSize)
        guard batchSize <= SessionResealJob.maxBatchSize else {
            throw RPCError(code: .invalidArgument, message: "batch_size: 1 to \(SessionResealJob.maxBatchSize)")
        }
        let job = deps.reseal
        let method = context.descriptor.fullyQualifiedMethod
        return StreamingServerResponse(metadata: [:]) { writer in
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await job.run(tenant: id, actor: actor, batchSize: batchSize) { progress in
                            try await writer.write(.with {
                                $0.targetVersion = UInt32(progress.targetVersion)
                                $0.resealed = UInt64(progress.resealed)
                                $0.remaining = UInt64(progress.remaining)
                                $0.total = UInt64(progress.total)
                                $0.batches = UInt32(progress.batches)
                                $0.done = progress.done
                            })
                        }
                    }
                    // The client gone or its deadline passed: stop between rows.
                    group.addTask {
                        try await context.cancellation.cancelled
                        throw CancellationError()
                    }
                    try await group.next()
                    group.cancelAll()
                }
            } catch {
                throw StatusMapping.rpcError(for: error, method: method, logger: Self.resealLogger)
            }
            return [:]
        }
    }

    /// Required by the simple protocol, never reached: the streaming-level ``resealKeys(request:context:)``
    /// above serves the method, so the generated default that would call this is not used.
    public func resealKeys(
        request: Custos_V1_ResealKeysRequest, response: RPCWriter<Custos_V1_ResealKeysProgress>, context: ServerContext
    ) async throws {
        throw RPCError(code: .internalError, message: "ResealKeys is served at the streaming level")
    }

    static let resealLogger = Logger(label: "custos.rpc.reseal")

    /// Why a purpose other than `data` has nothing to re-seal.
    static func howItMigrates(_ purpose: KeyPurpose) -> String {
        switch purpose {
        case .pii: "subject references move to the active version when a subject is looked up"
        case .bioSeed, .bioPRF: "templates move by re-enrolment"
        case .apiKeyPepper: "keys are re-hashed when presented; `custos apikey list --stale` shows the rest"
        case .webhook, .webhookEd25519: "nothing stored depends on it; the old version stops signing when its overlap ends"
        case .data: "re-seal"
        }
    }
}

import Custody
import CustosModel
import Foundation
import GRPCCore
import HSM
import Logging
import PKCS11
import RPC
import Storage
import Testing
import Tokenization
import Verification

/// `StatusMapping`, one row per error case a handler can meet: the gRPC code a caller sees,
/// and a message that never repeats what the error carries for the log only (reasons, SQL
/// contexts, paths, labels): every such payload below holds ``canary``.
@Suite("StatusMapping: every error case → its gRPC code, messages without secrets")
struct StatusMappingTests {
    /// Stands for anything secret or internal an error may carry (a PIN file's path, a
    /// database reason, an HSM reason): no message may contain it.
    static let canary = "CANARY-s3cr3t-4711"

    struct Row: Sendable, CustomTestStringConvertible {
        let error: any Error & Sendable
        let code: RPCError.Code
        /// The whole message, where the mapping replaces the error's text with its own.
        var message: String? = nil

        var testDescription: String { "\(String(reflecting: error)) → \(code)" }
    }

    struct Unexpected: Error, CustomStringConvertible {
        var description: String { "bug holding \(StatusMappingTests.canary)" }
    }

    static let id = UUID(uuidString: "9a1f7c3e-2b4d-4e6f-8a0b-1c2d3e4f5a6b")!
    static let tenant = TenantID("0f8fad5b-d9cb-469f-a165-70867728950e")!
    static let hsmUnavailable = "HSM unavailable; retry with backoff"
    static let databaseUnavailable = "database unavailable; retry with backoff"
    static let pkcs11 = PKCS11Error(function: .sign, returnValue: .generalError)

    static let verification: [Row] = [
        Row(error: VerificationError.notEnrolled, code: .failedPrecondition),
        Row(error: VerificationError.sessionNotFound(id), code: .notFound),
        Row(error: VerificationError.consentRequired(id), code: .failedPrecondition),
        Row(error: VerificationError.linkNotOpened(id), code: .failedPrecondition),
        Row(error: VerificationError.sessionCompleted(id), code: .failedPrecondition),
        Row(error: VerificationError.sessionExpired(id), code: .failedPrecondition),
        Row(error: VerificationError.gatewayLinkUnknown, code: .notFound),
        Row(error: VerificationError.gatewayLinkUsed, code: .failedPrecondition),
        Row(error: VerificationError.gatewayLinkExpired, code: .failedPrecondition),
        Row(error: VerificationError.invalidArgument(field: "subject_external_id", reason: "empty"), code: .invalidArgument),
        Row(error: VerificationError.alreadyEnrolled, code: .alreadyExists),
        Row(error: VerificationError.tooManyAttempts(limit: 20, window: .seconds(86_400), retryAfter: Date(timeIntervalSince1970: 0)), code: .resourceExhausted),
        Row(error: VerificationError.biometricVersionRetired(1), code: .aborted),
        Row(error: VerificationError.tokenWithdrawn, code: .failedPrecondition),
        Row(error: VerificationError.consentChanged(UUID(uuidString: "00000000-0000-0000-0000-000000000001")!), code: .aborted),
    ]

    static let tokenization: [Row] = [
        Row(error: FeatureVectorError.wrongDimension(3), code: .invalidArgument),
        Row(error: FeatureVectorError.notFinite(index: 2), code: .invalidArgument),
        Row(error: FeatureVectorError.zeroNorm, code: .invalidArgument),
        Row(error: TokenizationError.rateLimited(tenant), code: .resourceExhausted),
    ]

    static let apiKeys: [Row] = [
        Row(error: APIKeyError.invalid, code: .unauthenticated, message: "API key not valid"),
        Row(error: APIKeyError.malformed(.checksumMismatch), code: .unauthenticated, message: "API key not valid"),
        Row(error: APIKeyFormatError.malformed(.wrongLength), code: .invalidArgument),
        Row(error: APIKeyFormatError.checksumMismatch, code: .invalidArgument),
    ]

    static let approvals: [Row] = [
        Row(error: DestructionApprovalError.unknown(id), code: .notFound),
        Row(error: DestructionApprovalError.approverIsRequester(id), code: .permissionDenied),
        Row(error: DestructionApprovalError.cancelled(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.notDue(id, due: Date(timeIntervalSince1970: 0)), code: .failedPrecondition),
        Row(error: DestructionApprovalError.waitingDaysOutOfRange(5), code: .invalidArgument),
        Row(error: DestructionApprovalError.requestNotAuthentic(id), code: .failedPrecondition),
        Row(error: OverlapEndApprovalError.unknown(id), code: .notFound),
        Row(error: OverlapEndApprovalError.approverIsRequester(id), code: .permissionDenied),
        Row(error: OverlapEndApprovalError.approverRevoked(id), code: .permissionDenied),
        Row(error: OverlapEndApprovalError.alreadyApproved(id), code: .failedPrecondition),
        Row(error: OverlapEndApprovalError.expired(id), code: .failedPrecondition),
        Row(error: OverlapEndApprovalError.requestNotAuthentic(id), code: .failedPrecondition),
        Row(error: OffboardingError.unknown(id), code: .notFound),
        Row(error: OffboardingError.requestNotAuthentic(id), code: .failedPrecondition),
        Row(error: OffboardingError.approverIsRequester(id), code: .permissionDenied),
        Row(error: OffboardingError.notDue(id, due: Date(timeIntervalSince1970: 0)), code: .failedPrecondition),
        Row(error: OffboardingError.approvalNotAuthentic(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.alreadyApproved(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.notApproved(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.alreadyExecuted(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.expired(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.approvalNotAuthentic(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.approverRevoked(id), code: .failedPrecondition),
        Row(error: DestructionApprovalError.inProgress(id), code: .aborted),
    ]

    static let custody: [Row] = [
        Row(error: CustodyError.unknownTenant(tenant), code: .notFound),
        Row(error: CustodyError.tenantDisabled(tenant), code: .permissionDenied),
        Row(error: CustodyError.tenantOffboarding(tenant), code: .failedPrecondition),
        Row(error: CustodyError.noActiveKey(tenant, .data), code: .failedPrecondition),
        Row(error: CustodyError.unknownKeyVersion(tenant, .data, 3), code: .notFound),
        Row(error: CustodyError.rowTampered(tenant, .data, 3), code: .dataLoss),
        Row(error: CustodyError.cannotUnwrap(tenant, .data, 3), code: .dataLoss),
        Row(error: CustodyError.keyDestroyed(tenant, .data, 3), code: .failedPrecondition),
        Row(error: CustodyError.keyDisabled(tenant, .data, 3), code: .failedPrecondition),
        Row(error: CustodyError.keyDestructionScheduled(tenant, .data, 3, due: Date(timeIntervalSince1970: 0)), code: .failedPrecondition),
        Row(error: CustodyError.invalidTransition(tenant, .data, 3, from: .destroyed, to: .active), code: .failedPrecondition),
        Row(error: CustodyError.stillNeeded(tenant, .data, 3, reason: "2 sealed sessions"), code: .failedPrecondition),
        Row(error: CustodyError.biometricOverlapOpen(tenant, .bioSeed, 1, until: Date(timeIntervalSince1970: 1_800_000_000)), code: .failedPrecondition),
        Row(error: CustodyError.rootKeyMissing("custos/root/kek/data/v1"), code: .unavailable),
        Row(error: CustodyError.changedConcurrently(tenant, .data, 3), code: .aborted),
        Row(error: CustodyError.rotationPending(tenant, .data, 3), code: .failedPrecondition),
        Row(error: CustodyError.rootKeysDoNotMatch([]), code: .unavailable),
        Row(error: CustodyError.legacyRootKEKPresent(versions: [1]), code: .unavailable),
        Row(error: CustodyError.rootKeyNotRecorded(["custos/root/kek/data/v2"]), code: .unavailable),
        Row(error: CustodyError.rewrapKeyMissing(.data, version: 1), code: .unavailable),
        Row(error: CustodyError.sealedDataInvalid(tenant, .data, 3), code: .dataLoss),
        Row(error: CustodyError.tokenObjectLimit(tenant, limit: 8), code: .resourceExhausted),
        Row(error: CustodyError.auditLogBehindAnchor(anchoredSeq: 9, logSeq: 7), code: .dataLoss),
        Row(error: CustodyError.auditAnchorInvalid, code: .dataLoss),
        Row(error: CustodyError.auditLogHeadInvalid(seq: 12), code: .dataLoss),
        Row(error: CustodyError.keyStateAnchorInvalid, code: .dataLoss),
        Row(error: RecordIntegrityError.template(keyVersion: 2), code: .dataLoss),
        Row(error: RecordIntegrityError.session(id), code: .dataLoss),
        Row(error: CustodyError.featureUnavailable("v1a"), code: .failedPrecondition),
        Row(error: CustodyError.escrowKeyTampered(version: 1), code: .dataLoss),
        Row(error: CustodyError.escrowKeysNotConfigured, code: .failedPrecondition),
        Row(error: CustodyError.escrowKeyNotTrusted(version: 2, fingerprint: EscrowKeyFingerprint(publicKey: [UInt8](repeating: 7, count: 32))), code: .failedPrecondition),
        Row(error: CustodyError.hsm(.unavailable(reason: canary, retryAfterNanoseconds: nil)), code: .unavailable, message: hsmUnavailable),
        Row(error: CustodyError.storage(.unavailable(canary)), code: .unavailable, message: databaseUnavailable),
        Row(error: CustodyError.storage(.query(sqlState: "XX000", context: canary)), code: .internalError),
    ]

    static let hsm: [Row] = [
        Row(error: HSMError.exhausted(waitedNanoseconds: 2_000_000_000, maxSessions: 4), code: .resourceExhausted,
            message: "HSM session pool exhausted; retry with backoff"),
        Row(error: HSMError.unavailable(reason: canary, retryAfterNanoseconds: 50_000_000), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.pinRejected(.pinIncorrect), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.pinLocked(finalTry: true), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.loginUnverifiable, code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.pinUnreadable(.permissionsTooOpen(.file(path: "/\(canary)/user.pin"), mode: 0o644)), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.keyNotFound(canary), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.duplicateKey(canary), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.operationFailed(pkcs11), code: .internalError),
        Row(error: HSMError.transientFailure(pkcs11), code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.notRunning, code: .unavailable, message: hsmUnavailable),
        Row(error: HSMError.configuration(canary), code: .unavailable, message: hsmUnavailable),
    ]

    static let storage: [Row] = [
        Row(error: StorageError.unavailable(canary), code: .unavailable, message: databaseUnavailable),
        Row(error: StorageError.configuration(canary), code: .unavailable, message: databaseUnavailable),
        Row(error: StorageError.conflict("tenant label"), code: .alreadyExists, message: "already exists: tenant label"),
        Row(error: StorageError.notFound("tenant"), code: .notFound, message: "not found: tenant"),
        Row(error: StorageError.locked("key destruction request"), code: .aborted, message: "held by another call, try again: key destruction request"),
        Row(error: StorageError.permissionDenied(canary), code: .internalError),
        Row(error: StorageError.query(sqlState: "42P01", context: canary), code: .internalError),
        // Outside Enrol (which answers VerificationError.tokenWithdrawn), Custos writing a
        // withdrawn template MAC is its own fault.
        Row(error: StorageError.withdrawnTemplateMAC(canary), code: .internalError),
    ]

    static let others: [Row] = [
        Row(error: RPCError(code: .outOfRange, message: "passed through as it is"), code: .outOfRange, message: "passed through as it is"),
        Row(error: CancellationError(), code: .cancelled, message: "cancelled (deadline or client)"),
        Row(error: Unexpected(), code: .internalError),
    ]

    static let rows = verification + tokenization + apiKeys + approvals + custody + hsm + storage + others

    @Test("Each error case gives its code; a message never holds what the error kept for the log", arguments: rows)
    func mapping(_ row: Row) {
        let status = StatusMapping.rpcError(for: row.error, method: "custos.v1.Test/Call", logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        #expect(status.code == row.code)
        #expect(!status.message.contains(Self.canary))
        if let message = row.message { #expect(status.message == message) }
        if row.code == .internalError {
            // Only an incident id: the details are in the server's log.
            #expect(status.message.range(of: "^internal error \\(incident [0-9a-f-]{36}\\)$", options: .regularExpression) != nil, "\(status.message)")
        } else if row.message == nil {
            // The caller's own mistakes keep the error's precise text.
            #expect(status.message.contains(String(describing: row.error)), "\(status.message)")
        }
    }
}

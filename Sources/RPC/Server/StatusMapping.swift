import Custody
import Foundation
public import GRPCCore
import HSM
public import Logging
import Storage
import Tokenization
import Verification

/// Every error a handler can meet, as the status a caller sees (DESIGN §10): the caller's
/// mistakes are INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION / PERMISSION_DENIED /
/// RESOURCE_EXHAUSTED with a precise message; HSM or database trouble is UNAVAILABLE
/// (retryable); only our own bugs are INTERNAL, with a generic message (details go to the log).
/// Messages come from the errors' descriptions, which never hold secrets, features or
/// personal data.
public enum StatusMapping {
    public static func rpcError(for error: any Error, method: String, logger: Logger) -> RPCError {
        switch error {
        case let error as RPCError:
            return error
        case let error as VerificationError:
            return RPCError(code: code(for: error), message: error.description)
        case let error as RecordIntegrityError:
            // A template's the core logged with its tenant and version (never the subject).
            if case .template = error {} else {
                logger.error("stored data failed its integrity check", metadata: ["method": "\(method)", "error": "\(error)"])
            }
            return RPCError(code: .dataLoss, message: error.description)
        case let error as FeatureVectorError:
            return RPCError(code: .invalidArgument, message: "features: \(error.description)")
        case let error as TokenizationError:
            switch error {
            case .rateLimited: return RPCError(code: .resourceExhausted, message: error.description)
            }
        case let error as APIKeyError:
            // alreadyRevoked never gets here: RevokeKey and RevokeAPIKey answer it as success.
            if case .alreadyRevoked = error { return internalError(error, method: method, logger: logger) }
            return RPCError(code: .unauthenticated, message: "API key not valid")
        case let error as APIKeyUnusable:
            if let suppressed = error.suppressedBefore {
                logger.warning(
                    "API key refused by its pepper version's state",
                    metadata: ["method": "\(method)", "error": "\(error.cause)", "suppressed_since_last": "\(suppressed)"]
                )
            }
            return RPCError(code: .unauthenticated, message: "API key not valid")
        case let error as APIKeyFormatError:
            return RPCError(code: .invalidArgument, message: error.description)
        case let error as DestructionApprovalError:
            switch error {
            case .unknown: return RPCError(code: .notFound, message: error.description)
            case .approverIsRequester: return RPCError(code: .permissionDenied, message: error.description)
            case .waitingDaysOutOfRange: return RPCError(code: .invalidArgument, message: error.description)
            case .inProgress: return RPCError(code: .aborted, message: error.description)
            default: return RPCError(code: .failedPrecondition, message: error.description)
            }
        case let error as OverlapEndApprovalError:
            switch error {
            case .unknown: return RPCError(code: .notFound, message: error.description)
            case .approverIsRequester, .approverRevoked: return RPCError(code: .permissionDenied, message: error.description)
            case .alreadyApproved, .expired, .requestNotAuthentic: return RPCError(code: .failedPrecondition, message: error.description)
            }
        case let error as OffboardingError:
            switch error {
            case .unknown: return RPCError(code: .notFound, message: error.description)
            case .approverIsRequester: return RPCError(code: .permissionDenied, message: error.description)
            default: return RPCError(code: .failedPrecondition, message: error.description)
            }
        case let error as CustodyError:
            return custody(error, method: method, logger: logger)
        case let error as HSMError:
            return hsm(error, method: method, logger: logger)
        case let error as StorageError:
            return storage(error, method: method, logger: logger)
        case is CancellationError:
            return RPCError(code: .cancelled, message: "cancelled (deadline or client)")
        default:
            return internalError(error, method: method, logger: logger)
        }
    }

    static func code(for error: VerificationError) -> RPCError.Code {
        switch error {
        case .sessionNotFound, .gatewayLinkUnknown: .notFound
        case .notEnrolled, .consentRequired, .linkNotOpened, .sessionCompleted, .sessionExpired, .gatewayLinkUsed, .gatewayLinkExpired:
            .failedPrecondition
        case .invalidArgument: .invalidArgument
        case .alreadyEnrolled: .alreadyExists
        // A quota that refills with time (gRPC: "perhaps a per-user quota"), not a state the
        // caller must repair (FAILED_PRECONDITION): the same code as the tokenization budget.
        case .tooManyAttempts: .resourceExhausted
        // A conflict with a concurrent key change that a retry of the same call resolves.
        case .biometricVersionRetired, .consentChanged: .aborted
        case .tokenWithdrawn: .failedPrecondition
        }
    }

    static func custody(_ error: CustodyError, method: String, logger: Logger) -> RPCError {
        switch error {
        case .unknownTenant: return RPCError(code: .notFound, message: error.description)
        case .tenantDisabled: return RPCError(code: .permissionDenied, message: error.description)
        case .unknownKeyVersion: return RPCError(code: .notFound, message: error.description)
        case .noActiveKey, .tenantOffboarding, .keyDestroyed, .keyDisabled, .keyDestructionScheduled, .invalidTransition, .stillNeeded, .biometricOverlapOpen, .featureUnavailable,
             .escrowKeysNotConfigured, .rotationPending:
            return RPCError(code: .failedPrecondition, message: error.description)
        case .rowTampered, .tenantPolicyTampered, .cannotUnwrap, .sealedDataInvalid, .auditLogBehindAnchor, .auditAnchorInvalid, .auditLogHeadInvalid, .keyStateAnchorInvalid, .escrowKeyTampered:
            logger.error("stored data failed its integrity check", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(code: .dataLoss, message: error.description)
        case .escrowKeyNotTrusted:
            // Planted, or a new escrow key not yet in this instance's config: officers must look.
            logger.error("newest escrow key is not trusted by config.json", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(code: .failedPrecondition, message: error.description)
        case .changedConcurrently, .rootKEKRotated: return RPCError(code: .aborted, message: error.description)
        case .tokenObjectLimit: return RPCError(code: .resourceExhausted, message: error.description)
        case .rootKeyMissing, .rootKeysDoNotMatch, .legacyRootKEKPresent, .rootKeyNotRecorded, .rewrapKeyMissing:
            logger.error("root key missing", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(code: .unavailable, message: "HSM not ready: \(error.description)")
        case .hsm(let inner): return hsm(inner, method: method, logger: logger)
        case .storage(let inner): return storage(inner, method: method, logger: logger)
        }
    }

    static func hsm(_ error: HSMError, method: String, logger: Logger) -> RPCError {
        switch error {
        case .exhausted: return RPCError(code: .resourceExhausted, message: "HSM session pool exhausted; retry with backoff")
        case .unavailable, .transientFailure, .notRunning, .pinRejected, .pinLocked, .loginUnverifiable, .pinUnreadable, .configuration,
             .keyNotFound, .duplicateKey:
            logger.warning("HSM unavailable", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(code: .unavailable, message: "HSM unavailable; retry with backoff")
        case .operationFailed:
            if error.isRetryable { return RPCError(code: .unavailable, message: "HSM unavailable; retry with backoff") }
            return internalError(error, method: method, logger: logger)
        }
    }

    static func storage(_ error: StorageError, method: String, logger: Logger) -> RPCError {
        switch error {
        case .unavailable, .configuration:
            logger.warning("database unavailable", metadata: ["method": "\(method)", "error": "\(error)"])
            return RPCError(code: .unavailable, message: "database unavailable; retry with backoff")
        case .conflict(let context): return RPCError(code: .alreadyExists, message: "already exists: \(context)")
        case .notFound(let context): return RPCError(code: .notFound, message: "not found: \(context)")
        case .locked(let context): return RPCError(code: .aborted, message: "held by another call, try again: \(context)")
        case .permissionDenied, .query, .withdrawnTemplateMAC: return internalError(error, method: method, logger: logger)
        }
    }

    static func internalError(_ error: any Error, method: String, logger: Logger) -> RPCError {
        let incident = UUID().uuidString.lowercased()
        logger.error("internal error", metadata: ["method": "\(method)", "incident": "\(incident)", "error": "\(String(describing: type(of: error))): \(error)"])
        return RPCError(code: .internalError, message: "internal error (incident \(incident))")
    }
}

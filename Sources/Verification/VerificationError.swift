public import Foundation

/// Refusals of the verification core. Each is the caller's to fix (or to wait out), so each
/// maps to a precise status at the RPC boundary, never to an internal error.
public enum VerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No enrolled template for this subject (and key version) in this tenant.
    case notEnrolled
    /// No such session in this tenant (other tenants' sessions are invisible).
    case sessionNotFound(UUID)
    /// Features were sent for a session whose candidate has not consented.
    case consentRequired(UUID)
    /// Consent was sent before the candidate opened the gateway link.
    case linkNotOpened(UUID)
    /// The session's outcome is already recorded (it is written once).
    case sessionCompleted(UUID)
    /// The session is past its 24 h lifetime.
    case sessionExpired(UUID)
    /// The gateway link is unknown (or another tenant's), already used, or expired.
    case gatewayLinkUnknown
    case gatewayLinkUsed
    case gatewayLinkExpired
    /// A field the caller sent is out of range; `field` names it, `reason` says the rule.
    case invalidArgument(field: String, reason: String)
    /// The session's subject already has a template: replacing it needs the explicit
    /// re-enrolment flag.
    case alreadyEnrolled
    /// The subject had `limit` verification attempts in the current `window`: a quota that
    /// resets with time, not a state the caller can fix.
    case tooManyAttempts(limit: Int, window: Duration, retryAfter: Date)
    /// The features were tokenized under a biometric key version that stopped matching before
    /// the template (Enrol) or the decision (Verify, compared under that version) was written (a
    /// rotation's overlap closed meanwhile): nothing was written, no attempt counted, and the
    /// session stays open; sending the features again tokenizes them under the active version.
    case biometricVersionRetired(Int)
    /// The features gave exactly a token this subject had under this version and lost since
    /// (erased, replaced or aged out): a template once withdrawn is never written again
    /// (migration 34). Only the same features, or features so close that every symbol comes out
    /// the same, do that; two live captures never come that close. Nothing was written; the
    /// session stays open.
    case tokenWithdrawn
    /// RecordConsent met the session changing under it: another call opened its link or
    /// consented to another notice meanwhile. Nothing was written; sending it again records it.
    case consentChanged(UUID)

    public var description: String {
        switch self {
        case .notEnrolled: "subject not enrolled (or enrolled under another key version: re-enrol after a key rotation)"
        case .sessionNotFound(let id): "no verification session \(id.uuidString.lowercased()) for this tenant"
        case .consentRequired(let id): "session \(id.uuidString.lowercased()) has no recorded consent: record the candidate's consent before sending features"
        case .linkNotOpened(let id): "session \(id.uuidString.lowercased()): the candidate has not opened the gateway link yet"
        case .sessionCompleted(let id): "session \(id.uuidString.lowercased()) already has its outcome; create a new session"
        case .sessionExpired(let id): "session \(id.uuidString.lowercased()) has expired; create a new session"
        case .gatewayLinkUnknown: "unknown gateway link"
        case .gatewayLinkUsed: "gateway link already used (links are single-use)"
        case .gatewayLinkExpired: "gateway link expired (links are valid for 24 hours)"
        case .invalidArgument(let field, let reason): "invalid \(field): \(reason)"
        case .alreadyEnrolled: "the subject is already enrolled: re-enrolling replaces its template and needs the explicit re-enrol flag"
        case .tooManyAttempts(let limit, let window, let retryAfter):
            "too many verification attempts for this subject (at most \(limit) per \(window.components.seconds) s); retry after \(retryAfter.formatted(.iso8601))"
        case .biometricVersionRetired(let version):
            "biometric key version \(version) stopped matching (a rotation's overlap closed) while the features were tokenized; nothing was recorded: send the features again"
        case .tokenWithdrawn:
            "these features give exactly the template this subject had before it was erased, replaced or aged out (the same capture sent again): enrol from a new capture"
        case .consentChanged(let id):
            "session \(id.uuidString.lowercased()) changed while the consent was recorded (its link opened, or a consent to another notice version); nothing was written: send it again"
        }
    }
}

public import CustosModel
public import Foundation

/// A stored record failed its MAC check (``RecordSealing``): Custos did not write it as it
/// stands — a template copied from another subject's row or changed in place, a session whose
/// consent or outcome was written directly, or a row left without a MAC after every record was
/// sealed. Never the caller's mistake: the RPC answers DATA_LOSS, and nothing is compared,
/// shown, signed or exported from it.
public enum RecordIntegrityError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The subject's template of this biometric version (the subject is never named: DESIGN §9).
    case template(keyVersion: Int)
    case session(UUID)
    /// The tenant's policy row is not what its newest audited change recorded.
    case tenantPolicy(TenantID)

    public var description: String {
        switch self {
        case .template(let version):
            "the subject's stored template (biometric version \(version)) failed its integrity check and was not compared: an officer must look; the subject re-enrols afterwards"
        case .session(let id):
            "session \(id.uuidString.lowercased()) failed its integrity check (its subject, expiry, consent or outcome is not as Custos recorded it): an officer must look"
        case .tenantPolicy(let tenant):
            "tenant \(tenant)'s policy (thresholds, retention, budget, overlap) is not what its last audited change recorded: an officer must look, then set the whole policy again"
        }
    }
}

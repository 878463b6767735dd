import CustosModel
import HSM
import Storage

/// The HSM MACs of a `verification_sessions` row (migration 33) under the root MAC key: over its
/// consent and outcome (``SessionRecord``), so the database's writer can neither record a consent
/// the candidate never gave nor turn a session GREEN (which `GetSession` would show and
/// `SignDelivery` sign); and over its subject and expiry (``SessionSubject``), written at
/// creation, so it cannot point an open session at another subject (helper-80).
enum SessionRecordAuthenticator {
    static let domain = "custos/verification_sessions/v1"
    static let subjectDomain = "custos/verification_sessions/subject/v1"

    static func message(_ binding: SessionSubject, tenant: TenantID) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: subjectDomain)
        encoding.append(tenant.rawValue)
        encoding.append(binding.id.uuidString.lowercased())
        encoding.append(binding.subject)
        encoding.append(String(Int64(binding.expiresAt.timeIntervalSince1970.rounded(.down))))
        return encoding.bytes
    }

    static func message(_ record: SessionRecord, tenant: TenantID) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(tenant.rawValue)
        encoding.append(record.id.uuidString.lowercased())
        encoding.append(optional: record.noticeVersion)
        encoding.append(optional: record.consentedAt.map { String(Int64($0.timeIntervalSince1970.rounded(.down))) })
        encoding.append(optional: record.outcome)
        encoding.append(optional: record.confidence)
        encoding.append(optional: record.biometricKeyVersion.map(String.init))
        encoding.append(optional: record.completedAt.map { String(Int64($0.timeIntervalSince1970.rounded(.down))) })
        return encoding.bytes
    }
}

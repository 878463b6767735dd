import CustosModel
import Storage

/// The HSM MAC of a `templates` row (migration 33) under the root MAC key: it binds the token
/// to its tenant, subject reference and biometric version, so the database's writer cannot
/// copy one subject's token onto another's row (an impostor enrolled under a throwaway subject
/// would then verify GREEN as the target: helper-71 F3) or change a token in place.
///
/// The pii version is left out on purpose: the reference already names the subject, and a
/// move to the active pii version seals the moved row again under its new reference.
enum TemplateAuthenticator {
    static let domain = "custos/templates/v1"

    static func message(_ template: StoredTemplate, subject: String, tenant: TenantID) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(tenant.rawValue)
        encoding.append(subject)
        encoding.append(template.keyVersion)
        encoding.append(template.bytes)
        return encoding.bytes
    }
}

import CustosModel
import HSM
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

    static func seal(_ template: StoredTemplate, subject: String, tenant: TenantID, pool: SessionPool, rootKeys: RootKeys) async throws -> TemplateSeal {
        TemplateSeal(
            mac: try await pool.hmacSHA256(key: rootKeys.mac, data: message(template, subject: subject, tenant: tenant)),
            macVersion: rootKeys.macVersion
        )
    }

    /// Whether `seal` is `template`'s under the MAC key version it names. A version the token
    /// does not hold is a forged seal, not an HSM outage (as audit entries: helper-75).
    static func isAuthentic(_ template: StoredTemplate, seal: TemplateSeal, subject: String, tenant: TenantID, pool: SessionPool) async throws -> Bool {
        let expected: [UInt8]
        do {
            expected = try await pool.hmacSHA256(
                key: RootKeys(macVersion: seal.macVersion).mac, data: message(template, subject: subject, tenant: tenant)
            )
        } catch HSMError.keyNotFound {
            return false
        }
        return constantTimeEqual(expected, seal.mac)
    }
}

public import Custody
public import CustosModel
public import Storage
public import Verification

/// Template MACs under the root MAC key, through the keyring (which knows whether every
/// template has been sealed yet: ``TenantKeyring/isAuthenticTemplate(_:subject:tenant:)``).
public struct CustodyTemplateSealer: TemplateSealing {
    let keyring: TenantKeyring

    public init(keyring: TenantKeyring) {
        self.keyring = keyring
    }

    public func seal(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> TemplateSeal {
        try await keyring.sealTemplate(template, subject: subject, tenant: tenant)
    }

    public func isAuthentic(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool {
        try await keyring.isAuthenticTemplate(template, subject: subject, tenant: tenant)
    }
}

public import Custody
public import CustosModel
public import Storage
public import Verification

/// Record MACs under the root MAC key, through the keyring (which knows whether every record has
/// been sealed yet: ``TenantKeyring/isAuthenticTemplate(_:subject:tenant:)``).
public struct CustodyRecordSealer: RecordSealing {
    let keyring: TenantKeyring

    public init(keyring: TenantKeyring) {
        self.keyring = keyring
    }

    public func seal(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> RecordSeal {
        try await keyring.sealTemplate(template, subject: subject, tenant: tenant)
    }

    public func isAuthentic(_ template: StoredTemplate, subject: String, tenant: TenantID) async throws -> Bool {
        try await keyring.isAuthenticTemplate(template, subject: subject, tenant: tenant)
    }

    public func seal(_ record: SessionRecord, tenant: TenantID) async throws -> RecordSeal {
        try await keyring.sealSession(record, tenant: tenant)
    }

    public func isAuthentic(_ record: SessionRecord, seal: RecordSeal?, tenant: TenantID) async throws -> Bool {
        try await keyring.isAuthenticSession(record, seal: seal, tenant: tenant)
    }

    public func seal(_ binding: SessionSubject, tenant: TenantID) async throws -> RecordSeal {
        try await keyring.sealSessionSubject(binding, tenant: tenant)
    }

    public func isAuthentic(_ binding: SessionSubject, seal: RecordSeal?, tenant: TenantID) async throws -> Bool {
        try await keyring.isAuthenticSessionSubject(binding, seal: seal, tenant: tenant)
    }
}

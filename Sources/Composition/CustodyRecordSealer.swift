public import Custody
public import CustosModel
public import Storage
public import Verification

/// Record MACs under the root MAC key, through the keyring (which knows whether every record has
/// been sealed yet: ``TenantKeyring/areAuthentic(_:tenant:)``).
public struct CustodyRecordSealer: RecordSealing {
    let keyring: TenantKeyring

    public init(keyring: TenantKeyring) {
        self.keyring = keyring
    }

    public func seal(_ records: [SealableRecord], tenant: TenantID) async throws -> [RecordSeal] {
        try await keyring.seal(records, tenant: tenant)
    }

    public func areAuthentic(_ records: [(record: SealableRecord, seal: RecordSeal?)], tenant: TenantID) async throws -> Bool {
        try await keyring.areAuthentic(records, tenant: tenant)
    }
}

public import CustosModel
public import Foundation
import Storage

// `custos key status`: how far each purpose has migrated to its active version, so officers
// see when an old version reaches zero references and may be destroyed.
extension TenantKeyring {
    /// Every version of every purpose with what is still stored under it, and per purpose the
    /// share of stored values under the active version. The details are read in one
    /// transaction; `references` is the very count destruction checks, asked the same way.
    /// - Throws: ``CustodyError/unknownTenant(_:)``.
    public func status(_ tenant: TenantID, now: Date = Date()) async throws -> (versions: [KeyVersionStatus], purposes: [KeyPurposeMigration]) {
        try await custody {
            guard try await self.tenant(tenant) != nil else { throw CustodyError.unknownTenant(tenant) }
            let records = try await versions(tenant).sorted {
                (KeyPurpose.allCases.firstIndex(of: $0.purpose) ?? 0, $0.version) < (KeyPurpose.allCases.firstIndex(of: $1.purpose) ?? 0, $1.version)
            }
            let counted = try await database.withTenant(tenant, context: "key status") { connection in
                var counted = [KeyVersionStatus]()
                for record in records {
                    var templates = 0, sealed = 0, sessions = 0, apiKeys = 0
                    switch record.purpose {
                    case .bioSeed, .bioPRF:
                        templates = try await TemplateStore.count(keyVersion: record.version, on: connection)
                    case .pii:
                        templates = try await TemplateStore.count(piiVersion: record.version, on: connection)
                        sessions = try await SessionStore.count(piiVersion: record.version, on: connection)
                    case .data:
                        sealed = try await SessionStore.count(dataKeyVersion: record.version, on: connection)
                    case .apiKeyPepper:
                        apiKeys = try await APIKeyStore.count(pepperVersion: record.version, at: now, on: connection)
                    case .webhook, .webhookEd25519:
                        break
                    }
                    let signing = (record.purpose == .webhook || record.purpose == .webhookEd25519)
                        && (record.state == .active || (record.state == .retiring && (record.retiringUntil.map { $0 > now } ?? false)))
                    counted.append(KeyVersionStatus(
                        record: record, templates: templates, sealedRecords: sealed, sessions: sessions, apiKeys: apiKeys,
                        references: templates + sealed + sessions + apiKeys, signing: signing, listed: nil
                    ))
                }
                return counted
            }
            // What destruction refuses on, asked the way destruction asks (so the two never
            // disagree); the details above are what it is made of.
            // Read fresh: an officer checking a change wants the token's word, not a cached one.
            let listed = try await self.anchoredStates(fresh: true)
            var statuses = [KeyVersionStatus]()
            for status in counted {
                let record = status.record
                statuses.append(status.with(
                    references: try await self.references(tenant, record.purpose, version: record.version),
                    listed: listed.listed(KeyStateAnchor.Entry(tenant: tenant, purpose: record.purpose, version: record.version))
                ))
            }
            let purposes = KeyPurpose.allCases.compactMap { purpose -> KeyPurposeMigration? in
                let ofPurpose = statuses.filter { $0.record.purpose == purpose }
                guard !ofPurpose.isEmpty else { return nil }
                let active = ofPurpose.first { $0.record.state == .active }
                return KeyPurposeMigration(
                    purpose: purpose, activeVersion: active?.record.version,
                    storedValues: ofPurpose.reduce(0) { $0 + $1.references }, underActive: active?.references ?? 0
                )
            }
            return (statuses, purposes)
        }
    }
}

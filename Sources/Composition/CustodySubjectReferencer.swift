public import Custody
public import CustosModel
public import HSM
public import Verification

/// Subject references as HMAC-SHA256 (in the HSM) of the external id under the tenant's `pii`
/// key: deterministic per tenant and key version, unlinkable across tenants.
public struct CustodySubjectReferencer: SubjectReferencing {
    let pool: SessionPool
    let keyring: TenantKeyring

    public init(pool: SessionPool, keyring: TenantKeyring) {
        self.pool = pool
        self.keyring = keyring
    }

    public func references(for externalID: PersonalText, tenant: TenantID) async throws -> [SubjectReference] {
        let versions = try await keyring.versions(tenant)
            .filter { $0.purpose == .pii && ($0.state == .active || $0.state == .retiring || $0.state == .retired) }
            .sorted { ($0.state == .active ? 1 : 0, $0.version) > ($1.state == .active ? 1 : 0, $1.version) }
        var references = [SubjectReference]()
        for record in versions {
            let (key, version) = try await keyring.key(tenant, .pii, version: record.version)
            let mac = try await hsm { try await pool.hmacSHA256(key: key, data: Self.message(externalID)) }
            references.append(SubjectReference(value: "v\(version):" + lowercaseHex(mac), piiVersion: version))
        }
        return references
    }

    /// Domain-separated, so a `pii` HMAC of an external id never equals one made for another use.
    static func message(_ externalID: PersonalText) -> [UInt8] {
        Array("custos/subject/v1\0".utf8) + Array(externalID.value.utf8)
    }
}

/// HSM failures surface as custody errors, as everywhere else above the pool.
func hsm<R>(_ body: () async throws -> R) async throws -> R {
    do {
        return try await body()
    } catch let error as HSMError {
        throw CustodyError.hsm(error)
    }
}

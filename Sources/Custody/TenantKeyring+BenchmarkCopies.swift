public import CustosModel
public import Storage

extension TenantKeyring {
    /// `record`'s wrapped key as a version of `tenant`, sealed with a valid row MAC — for the
    /// tenant-scale benchmark only, which stores 100,000 tenants without generating 100,000
    /// keys in the HSM. Every copy is still unwrapped on its own first use (the pool caches per
    /// tenant, purpose and version), so the measured path stays real. Two tenants sharing key
    /// material is exactly what custody must never do otherwise: nothing but `custos-bench`
    /// calls it (scripts/check-imports refuses SPI imports outside Tests/, so it is public).
    public func benchmarkCopy(of record: KeyVersionRecord, for tenant: TenantID) async throws -> KeyVersionRecord {
        let copy = KeyVersionRecord(
            tenant: tenant, purpose: record.purpose, version: record.version, state: record.state, wrappedKey: record.wrappedKey,
            wrapMechanism: record.wrapMechanism, rootKEKVersion: record.rootKEKVersion, checkValue: record.checkValue,
            rowMAC: [], activatedAt: record.activatedAt
        )
        return try await authenticator.sealed(copy, pool: pool)
    }
}

public import CustosModel

extension TenantKeyring {
    /// The token format of `tenant`'s `bio` version `version`, as its `bio-prf` row records it
    /// (read through the same MAC-checked, cached lookup as the key): a version whose row
    /// records none predates the compact format and is ``BiometricTokenFormat/wide``.
    /// - Throws: ``CustodyError`` (unknown, destroyed or disabled version; tampered row).
    public func biometricTokenFormat(_ tenant: TenantID, version: Int) async throws -> BiometricTokenFormat {
        try await custody {
            try await self.record(tenant, .bioPRF, version: version).tokenFormat ?? .wide
        }
    }
}

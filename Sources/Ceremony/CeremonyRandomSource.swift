public import HSM
public import SecureMemory

/// Where key material and Shamir coefficients come from. In a ceremony that is the HSM's RNG
/// (`C_GenerateRandom`); tests pass a deterministic source so that splits are reproducible.
public protocol CeremonyRandomSource: Sendable {
    /// `count` random bytes, straight into protected memory.
    func randomSecret(count: Int) async throws -> SecretBytes
}

/// The HSM's random number generator, through the session pool.
public struct HSMRandomSource: CeremonyRandomSource {
    let pool: SessionPool

    public init(pool: SessionPool) { self.pool = pool }

    public func randomSecret(count: Int) async throws -> SecretBytes {
        try await pool.randomSecret(count: count)
    }
}

public import Custody
public import CustosModel
import Foundation
public import HSM
import SecureMemory
import Synchronization

/// Face embeddings in, keyed one-way tokens out (DESIGN §6):
/// 1. the projection seed is an HSM HMAC under the tenant's `bio-seed` key (computed once per
///    tenant and biometric version, then the projection is cached);
/// 2. Index-of-Max hashing of the unit vector in the key version's format's shape
///    (``BiometricKeys/format``): 4,096 symbols, each the argmax of 4 projections (quaternary),
///    or 1,024 of 16 (compact, wide) — m·q = 16,384 projections either way;
/// 3. one `C_Encrypt` (AES-ECB, the `bio-prf` key, which cannot decrypt) over all m blocks;
///    2 bits (quaternary), 8 (compact) or 32 (wide) of each output block make the token.
///
/// Feature vectors live in zeroizing storage and are never logged; tokens never leave the
/// service (the RPC returns decisions, not tokens).
public final class BiometricTokenizer: Sendable {
    let pool: SessionPool
    public let kind: IndexOfMaxHashing.ProjectionKind
    public let limiter: TokenizationRateLimiter?
    let keys: @Sendable (TenantID, Int?) async throws -> BiometricKeys
    private let projections = Mutex([String: IndexOfMaxHashing]())
    /// Projections kept at once; past this the cache is emptied (a structured projection is
    /// small, but the number of tenants is not bounded).
    public let projectionCacheLimit: Int

    /// The two keys of one biometric version, and the token format recorded with it.
    public struct BiometricKeys: Sendable {
        public let version: Int
        public let seed: HSMKey
        public let prf: HSMKey
        public let format: BiometricTokenFormat

        public init(version: Int, seed: HSMKey, prf: HSMKey, format: BiometricTokenFormat) {
            self.version = version
            self.seed = seed
            self.prf = prf
            self.format = format
        }
    }

    /// Tokenizes under each tenant's own `bio-seed` and `bio-prf` keys from `keyring`.
    public convenience init(
        pool: SessionPool, keyring: TenantKeyring, kind: IndexOfMaxHashing.ProjectionKind = .structured,
        limiter: TokenizationRateLimiter? = nil, projectionCacheLimit: Int = 10_000
    ) {
        self.init(pool: pool, keys: TenantBiometricKeys(keyring: keyring), kind: kind, limiter: limiter, projectionCacheLimit: projectionCacheLimit)
    }

    /// Tokenizes under whatever `keys` hands out. The service passes ``TenantBiometricKeys``;
    /// fixed evaluation keys live in the separate `TokenizationEvaluation` target, which the
    /// `custos` executable does not link, so a production build cannot tokenize with them.
    public init(
        pool: SessionPool, keys: some BiometricKeySource, kind: IndexOfMaxHashing.ProjectionKind = .structured,
        limiter: TokenizationRateLimiter? = nil, projectionCacheLimit: Int = 10_000
    ) {
        self.pool = pool
        self.kind = kind
        self.limiter = limiter
        self.projectionCacheLimit = projectionCacheLimit
        self.keys = { tenant, version in try await keys.keys(for: tenant, version: version) }
    }

    /// The token of `features` for `tenant` under its active biometric version (or `version`).
    /// - Throws: ``TokenizationError`` (rate limit), ``CustodyError`` (keys, HSM, database),
    ///   `StorageError` (the shared budget cannot be read).
    public func tokenize(_ features: FeatureVector, tenant: TenantID, version: Int? = nil) async throws -> BiometricToken {
        try await prepare(tenant: tenant, version: version).tokenize(features)
    }

    /// Everything a tokenization needs but the features, taken before a caller opens the
    /// transaction the token is used in: one unit of `tenant`'s budget and the keys of its
    /// active biometric version (or `version`). Both may need a database connection (a budget
    /// lease, a key-version lookup); tokenizing with what this returns needs only the HSM, so a
    /// transaction never holds one connection while it waits for another.
    /// - Throws: as ``tokenize(_:tenant:version:)``; the budget unit is given back when the keys
    ///   cannot be had.
    public func prepare(tenant: TenantID, version: Int? = nil) async throws -> PreparedTokenization {
        try await limiter?.acquire(tenant)
        do {
            return PreparedTokenization(tokenizer: self, tenant: tenant, keys: try await keys(tenant, version))
        } catch {
            limiter?.giveBack(tenant)
            throw error
        }
    }

    /// The HSM part of a tokenization: the projection (seeded once per tenant and version) and
    /// the PRF over all blocks.
    func tokenize(_ features: FeatureVector, tenant: TenantID, keys: BiometricKeys) async throws -> BiometricToken {
        BiometricToken(
            keyVersion: keys.version, format: keys.format, values: try await values(of: features, tenant: tenant, keys: keys, shape: keys.format.shape)
        )
    }

    /// The token values of `features` in any `shape`, under `tenant`'s biometric version
    /// `version` (or its active one), through the same projection and PRF as a token, and
    /// against the same budget: for comparing shapes that no ``BiometricTokenFormat`` has yet
    /// (`custos-bench eval run --positions --bits --symbols`). The service only makes tokens, in
    /// their key version's format.
    /// - Throws: as ``tokenize(_:tenant:version:)``.
    public func values(of features: FeatureVector, tenant: TenantID, version: Int? = nil, shape: BiometricTokenShape) async throws -> [UInt32] {
        let prepared = try await prepare(tenant: tenant, version: version)
        return try await values(of: features, tenant: tenant, keys: prepared.keys, shape: shape)
    }

    private func values(of features: FeatureVector, tenant: TenantID, keys: BiometricKeys, shape: BiometricTokenShape) async throws -> [UInt32] {
        let hashing = try await projection(tenant: tenant, keys: keys, dimension: features.dimension, shape: shape)
        let symbols = try hashing.symbols(for: features)
        let blocks = PRFBlocks(tenant: tenant, keyVersion: keys.version).input(for: symbols, symbolsPerPosition: shape.symbolsPerPosition)
        let output = try await custodyCall { try await self.pool.encryptBlocksECB(key: keys.prf, blocks: blocks) }
        return try PRFBlocks.tokenValues(fromPRFOutput: output, shape: shape)
    }

    private func projection(tenant: TenantID, keys: BiometricKeys, dimension: Int, shape: BiometricTokenShape) async throws -> IndexOfMaxHashing {
        let cacheKey = "\(tenant.rawValue)/\(keys.version)/\(dimension)/\(kind.rawValue)/\(shape.positions)x\(shape.symbolsPerPosition)"
        if let cached = projections.withLock({ $0[cacheKey] }) { return cached }
        var message = Array("custos/bio/seed/v1".utf8)
        message.append(contentsOf: Array(tenant.rawValue.utf8))
        message.append(contentsOf: Array(String(keys.version).utf8))
        var seedBytes = try await custodyCall { try await self.pool.hmacSHA256(key: keys.seed, data: message) }
        let seed = SecretBytes(seedBytes)
        // The projection's seed: secret as the projection it expands to.
        seedBytes.withUnsafeMutableBytes { wipe($0) }
        let hashing = try IndexOfMaxHashing(seed: seed, dimension: dimension, kind: kind, shape: shape)
        projections.withLock { cache in
            if cache.count >= projectionCacheLimit { cache.removeAll() }
            cache[cacheKey] = hashing
        }
        return hashing
    }

    private func custodyCall<R>(_ body: () async throws -> R) async throws -> R {
        do {
            return try await body()
        } catch let error as HSMError {
            throw CustodyError.hsm(error)
        }
    }
}

/// Tokenization failures of the caller's making.
public enum TokenizationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The tenant used up its tokenization budget: whoever can call the PRF at will can build a
    /// codebook, so calls are rate-limited per tenant (DESIGN §6).
    case rateLimited(TenantID)

    public var description: String {
        switch self {
        case .rateLimited(let tenant): "tenant \(tenant) is over its tokenization budget; retry later"
        }
    }
}

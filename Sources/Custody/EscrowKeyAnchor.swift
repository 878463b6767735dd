import Crypto
import HSM
import SecureMemory
import Storage

/// The newest escrow key the ceremony pinned, kept on every token as a private data object
/// (label `custos/escrow-keys/newest`, `CKA_APPLICATION` naming the database and schema): its
/// version and the SHA-256 of its public key.
///
/// Rows of `escrow_keys` carry HSM MACs, so a database writer can neither add nor edit one, but
/// the owner role can delete the newest: new seeds would then be sealed to an older escrow key,
/// perhaps the one replaced because its custodians' shares leaked. A token naming a key the
/// database lacks stops sealing (``TenantKeyring/pinnedEscrowKey()``).
///
/// No MAC of its own: only the user PIN reaches the object, and whoever holds it can compute
/// any MAC the service can. Never moved back: a key the database records later is raised to.
struct EscrowKeyAnchor: Sendable {
    static let label = "custos/escrow-keys/newest"

    /// The pinned escrow key as the tokens remember it.
    struct Pin: Sendable, Equatable {
        let version: Int
        let publicKeyHash: [UInt8]

        init(_ record: EscrowKeyRecord) {
            version = record.version
            publicKeyHash = Array(SHA256.hash(data: record.publicKey))
        }

        /// 8 bytes of version (big-endian), then the 32-byte hash.
        init?(bytes: [UInt8]) {
            guard bytes.count == 40 else { return nil }
            let version = bytes[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            guard version > 0, version <= UInt64(Int32.max) else { return nil }
            self.version = Int(version)
            publicKeyHash = Array(bytes[8...])
        }

        var bytes: [UInt8] {
            (0..<8).reversed().map { UInt8(truncatingIfNeeded: UInt64(version) >> (8 * UInt64($0))) } + publicKeyHash
        }
    }

    let pool: SessionPool
    let object: TokenDataObject

    /// - Parameter logIdentity: the database and schema, as the other anchors name them.
    init(pool: SessionPool, logIdentity: String) {
        self.pool = pool
        let application = "custos/escrow-keys:" + Hex.encode(SHA256.hash(data: Array("\(Self.label)\0\(logIdentity)".utf8)).prefix(16))
        object = TokenDataObject(label: Self.label, application: application)
    }

    /// The newest pin any answering token holds; `nil` when none holds one (before the first
    /// seal after upgrading, or on tokens all restored from shares since). A token out of
    /// service is not read (``SessionPool/tokenPoolsInService``): whoever re-made it could pin a
    /// version the database lacks there, and stop every new v1a key.
    /// - Throws: ``HSMError`` when no token answers, or none is in service.
    func read() async throws -> Pin? {
        let object = object
        var newest: Pin?
        var answered = false
        var unreachable: HSMError?
        let tokens = pool.tokenPoolsInService
        guard !tokens.isEmpty else { throw HSMError.unavailable(reason: "no HSM token in service", retryAfterNanoseconds: nil) }
        for token in tokens {
            do {
                let values = try await token.withSession { session in try object.values(in: session.pkcs11) }
                answered = true
                for pin in values.compactMap(Pin.init(bytes:)) where pin.version > newest?.version ?? 0 { newest = pin }
            } catch let error as HSMError where error.isRetryable {
                unreachable = error
            }
        }
        if !answered, let unreachable { throw unreachable }
        return newest
    }

    /// Stores `pin` on every answering token that holds an older one or none (a replica
    /// restored from shares catches up here). A token that does not answer is skipped: it
    /// catches up on the next call after its return.
    func raise(to pin: Pin) async throws {
        let object = object
        for token in pool.tokenPools {
            do {
                try await token.withSession { session in
                    let stored = try object.values(in: session.pkcs11).compactMap(Pin.init(bytes:)).map(\.version).max() ?? 0
                    if stored < pin.version { try object.replace(with: pin.bytes, in: session.pkcs11) }
                }
            } catch let error as HSMError where error.isRetryable && pool.tokenPools.count > 1 {
                continue
            }
        }
    }
}

import Crypto
public import CustosModel
import Foundation
public import SecureMemory
public import Storage

/// Ed25519 seeds encrypted to the custodians' escrow key, so that a v1a webhook key outlives
/// every token that holds it (docs/key-hierarchy.md, "Replica tokens"). RFC 9180 HPKE in base
/// mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. The associated data binds each
/// ciphertext to its row (tenant, purpose, version, token label, public key) and to the escrow
/// key version, so a ciphertext moved to another row does not open.
///
/// The service only seals: the escrow private key exists only as M-of-N custodian shares, and
/// ``open(_:record:escrowPrivateKey:)`` runs in the ceremony that combines them.
public enum SeedEscrow {
    static let info = Data("custos/webhook-ed25519/escrow/v1".utf8)
    static let ciphersuite = HPKE.Ciphersuite(kem: .Curve25519_HKDF_SHA256, kdf: .HKDF_SHA256, aead: .AES_GCM_256)
    /// Ed25519 seeds and X25519 private keys are 32 bytes.
    public static let keyLength = 32

    static func associatedData(_ record: KeyVersionRecord, escrowKeyVersion: Int) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: "custos/key_version_escrows/v1")
        encoding.append(record.tenant.rawValue)
        encoding.append(record.purpose.rawValue)
        encoding.append(record.version)
        encoding.append(optional: record.tokenLabel)
        encoding.append(optional: record.publicKey)
        encoding.append(escrowKeyVersion)
        return encoding.bytes
    }

    /// `seed` encrypted to `escrowKey` (already checked against its HSM MAC) for `record`.
    static func seal(_ seed: SecretBytes, to escrowKey: EscrowKeyRecord, for record: KeyVersionRecord) throws -> SeedEscrowRecord {
        let recipient = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: escrowKey.publicKey)
        var sender = try HPKE.Sender(recipientKey: recipient, ciphersuite: ciphersuite, info: info)
        let ciphertext = try seed.withUnsafeBytes { seedBytes in
            try sender.seal(seedBytes, authenticating: associatedData(record, escrowKeyVersion: escrowKey.version))
        }
        return SeedEscrowRecord(
            tenant: record.tenant, purpose: record.purpose, version: record.version, escrowKeyVersion: escrowKey.version,
            encapsulatedKey: Array(sender.encapsulatedKey), ciphertext: Array(ciphertext)
        )
    }

    /// The seed escrowed for `record`, decrypted with the escrow private key the custodians'
    /// shares rebuilt, into protected memory (the decrypted buffer is wiped).
    /// - Throws: ``SeedEscrowError`` when the ciphertext does not open for this row (moved,
    ///   edited, or sealed to another escrow key) or is not a seed.
    public static func open(_ escrow: SeedEscrowRecord, record: KeyVersionRecord, escrowPrivateKey: SecretBytes) throws -> SecretBytes {
        do {
            let privateKey = try escrowPrivateKey.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) }
            var recipient = try HPKE.Recipient(
                privateKey: privateKey, ciphersuite: ciphersuite, info: info, encapsulatedKey: Data(escrow.encapsulatedKey)
            )
            var plaintext = try recipient.open(escrow.ciphertext, authenticating: associatedData(record, escrowKeyVersion: escrow.escrowKeyVersion))
            defer { plaintext.withUnsafeMutableBytes { wipe($0) } }
            guard plaintext.count == keyLength else { throw SeedEscrowError.doesNotOpen(record.tenant, record.purpose, record.version) }
            return SecretBytes(plaintext)
        } catch let error as SeedEscrowError {
            throw error
        } catch {
            throw SeedEscrowError.doesNotOpen(record.tenant, record.purpose, record.version)
        }
    }

    /// The X25519 public key of an escrow private key (32 bytes).
    public static func escrowPublicKey(of privateKey: SecretBytes) throws -> [UInt8] {
        do {
            let key = try privateKey.withUnsafeBytes { try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: $0) }
            return Array(key.publicKey.rawRepresentation)
        } catch {
            throw SeedEscrowError.notAnEscrowKey
        }
    }

    /// The Ed25519 public key of `seed` (32 bytes), computed in software: the key every token
    /// that imports the seed must sign for.
    public static func ed25519PublicKey(of seed: SecretBytes) throws -> [UInt8] {
        do {
            let key = try seed.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) }
            return Array(key.publicKey.rawRepresentation)
        } catch {
            throw SeedEscrowError.notASeed
        }
    }
}

/// Why an escrowed seed could not be used. Names rows, never bytes.
public enum SeedEscrowError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The ciphertext does not decrypt for this row under the given escrow key.
    case doesNotOpen(TenantID, KeyPurpose, Int)
    /// The escrow decrypted, but its seed does not give the row's (MAC-checked) public key: the
    /// ciphertext was replaced by one a database writer made for a seed of their own.
    case publicKeyMismatch(TenantID, KeyPurpose, Int)
    case notAnEscrowKey
    case notASeed

    public var description: String {
        switch self {
        case .doesNotOpen(let tenant, let purpose, let version):
            "the escrowed seed of \(purpose.rawValue) v\(version) of tenant \(tenant) does not open with these shares (moved, edited, or made for another escrow key)"
        case .publicKeyMismatch(let tenant, let purpose, let version):
            "the escrowed seed of \(purpose.rawValue) v\(version) of tenant \(tenant) does not give the public key its row records: the ciphertext was replaced; not imported"
        case .notAnEscrowKey: "the combined shares are not an X25519 escrow key"
        case .notASeed: "not an Ed25519 seed"
        }
    }
}

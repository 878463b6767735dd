import CustosModel
import HSM
import PKCS11
import Storage

/// Computes and checks the HSM MAC that binds a `key_versions` row to its fields (DESIGN §5):
/// moving a wrapped blob to another row, or editing its state, makes the MAC fail.
public struct KeyVersionAuthenticator: Sendable {
    let rootKeys: RootKeys

    static let domain = "custos/key_versions/v1"

    /// The bytes the MAC covers: tenant, purpose, version, state, wrapped blob, wrap mechanism,
    /// root KEK version, check value, public key, token label.
    static func message(for record: KeyVersionRecord) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: domain)
        encoding.append(record.tenant.rawValue)
        encoding.append(record.purpose.rawValue)
        encoding.append(record.version)
        encoding.append(record.state.rawValue)
        encoding.append(optional: record.wrappedKey)
        encoding.append(record.wrapMechanism)
        encoding.append(record.rootKEKVersion)
        encoding.append(record.checkValue)
        encoding.append(optional: record.publicKey)
        encoding.append(optional: record.tokenLabel)
        return encoding.bytes
    }

    /// The MAC for `record`, computed in the HSM.
    func mac(_ record: KeyVersionRecord, pool: SessionPool) async throws -> [UInt8] {
        try await pool.hmacSHA256(key: rootKeys.mac, data: Self.message(for: record))
    }

    /// `record` with its MAC recomputed (after a state change).
    func sealed(_ record: KeyVersionRecord, pool: SessionPool) async throws -> KeyVersionRecord {
        var sealed = record
        sealed.rowMAC = try await mac(record, pool: pool)
        return sealed
    }

    /// Checks the MAC inside an HSM session (used by key resolvers, which run there).
    func isAuthentic(_ record: KeyVersionRecord, session: PKCS11Session, macKey: ObjectHandle) throws -> Bool {
        let expected = try session.sign(.sha256HMAC, key: macKey, data: Self.message(for: record))
        return constantTimeEqual(expected, record.rowMAC)
    }
}

/// Compares in time that depends only on the lengths.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}

import CustosModel
import Foundation
import HSM
import PKCS11
import Storage

/// Computes and checks the HSM MAC that binds a `key_versions` row to its fields (DESIGN §5):
/// moving a wrapped blob to another row, editing its state, or moving one of its lifecycle
/// times (to shorten a waiting period) makes the MAC fail.
public struct KeyVersionAuthenticator: Sendable {
    let rootKeys: RootKeys
    /// Accept rows sealed by the first format, which did not cover lifecycle times. Only the
    /// migration off a legacy root KEK sets it: it reseals every row in the current format, and
    /// the service refuses to start while a legacy KEK is on the token.
    let acceptsFirstFormat: Bool

    init(rootKeys: RootKeys, acceptsFirstFormat: Bool = false) {
        self.rootKeys = rootKeys
        self.acceptsFirstFormat = acceptsFirstFormat
    }

    static let domain = "custos/key_versions/v2"
    static let firstDomain = "custos/key_versions/v1"

    /// The bytes the MAC covers: tenant, purpose, version, state, wrapped blob, wrap mechanism,
    /// root KEK version, check value, public key, token label, and the times it became active,
    /// retiring-until, retired and destroyed (whole seconds); when set, the times it was
    /// disabled and its destruction is due.
    static func message(for record: KeyVersionRecord) -> [UInt8] {
        var encoding = fields(of: record, domain: domain)
        for time in [record.activatedAt, record.retiringUntil, record.retiredAt, record.destroyedAt] {
            encoding.append(optional: time.map { String(Int64($0.timeIntervalSince1970.rounded(.down))) })
        }
        // Disabled and scheduled-for-destruction are appended only when set, so rows sealed
        // before they existed keep their MAC; clearing either in the database (to use a
        // disabled key) changes the message and fails the MAC, as does setting one.
        if record.disabledAt != nil || record.destructionDueAt != nil {
            encoding.append("usability")
            for time in [record.disabledAt, record.destructionDueAt] {
                encoding.append(optional: time.map { String(Int64($0.timeIntervalSince1970.rounded(.down))) })
            }
        }
        // Likewise the token format of a `bio` version, appended only when recorded: rows made
        // before formats existed keep their MAC, and clearing or changing a recorded format
        // (to make the service tokenize under another one) fails it.
        if let format = record.tokenFormat {
            encoding.append("token_format")
            encoding.append(format.rawValue)
        }
        return encoding.bytes
    }

    static func firstFormatMessage(for record: KeyVersionRecord) -> [UInt8] {
        fields(of: record, domain: firstDomain).bytes
    }

    private static func fields(of record: KeyVersionRecord, domain: String) -> CanonicalEncoding {
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
        return encoding
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

    /// Whether the stored MAC matches (checked through the pool).
    func isAuthentic(_ record: KeyVersionRecord, pool: SessionPool) async throws -> Bool {
        if constantTimeEqual(try await mac(record, pool: pool), record.rowMAC) { return true }
        guard acceptsFirstFormat else { return false }
        return constantTimeEqual(try await pool.hmacSHA256(key: rootKeys.mac, data: Self.firstFormatMessage(for: record)), record.rowMAC)
    }

    /// Throws ``CustodyError/rowTampered(_:_:_:)`` unless the stored MAC matches.
    func verify(_ record: KeyVersionRecord, pool: SessionPool) async throws {
        guard try await isAuthentic(record, pool: pool) else {
            throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
        }
    }

    /// Checks the MAC inside an HSM session (used by key resolvers, which run there).
    func isAuthentic(_ record: KeyVersionRecord, session: PKCS11Session, macKey: ObjectHandle) throws -> Bool {
        if constantTimeEqual(try session.sign(.sha256HMAC, key: macKey, data: Self.message(for: record)), record.rowMAC) { return true }
        guard acceptsFirstFormat else { return false }
        return constantTimeEqual(try session.sign(.sha256HMAC, key: macKey, data: Self.firstFormatMessage(for: record)), record.rowMAC)
    }
}

extension Date {
    /// Now, in whole seconds: lifecycle times are covered by row MACs, and whole seconds
    /// survive every round trip through PostgreSQL exactly.
    static var wholeSecondsNow: Date { Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down)) }
}

/// Compares in time that depends only on the lengths.
func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
    return difference == 0
}

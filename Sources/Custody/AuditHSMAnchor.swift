import Crypto
public import HSM
import PKCS11

/// The audit head kept in the HSM: a private token data object (`CKO_DATA`, label
/// `custos/audit/anchor`, `CKA_APPLICATION` naming the log, since several databases or schemas
/// may share a token) holding an ``AuditAnchor``.
///
/// Shared by every instance that uses the token, written only under the append lock, and
/// never moved backwards (``AuditLog`` refuses to append when the log stands behind it), so
/// deleting the newest entries — or copying an older anchor file back — is found. Reading or
/// writing it needs the user PIN, like every key on the token.
///
/// SoftHSM 2.6.1 keeps a data object's `CKA_VALUE` read-only once created, so a write creates
/// the new object first and then destroys the old ones; a reader takes the MAC-valid object
/// with the highest sequence number, so a crash between the two steps loses nothing.
public struct AuditHSMAnchor: Sendable {
    public static let label = "custos/audit/anchor"

    let pool: SessionPool
    let macKey: HSMKey
    /// `CKA_APPLICATION`: `custos/audit:` and 16 bytes of SHA-256 of the log's identity, in hex.
    let application: String

    /// - Parameter logIdentity: names the log, e.g. database and schema.
    public init(pool: SessionPool, macKey: HSMKey, logIdentity: String) {
        self.pool = pool
        self.macKey = macKey
        application = "custos/audit:" + lowercaseHex(SHA256.hash(data: Array("custos/audit/anchor\0\(logIdentity)".utf8)).prefix(16))
    }

    /// What the token holds.
    enum Reading: Equatable {
        case missing
        /// Objects are there but none is a MAC-valid anchor (written by someone else, or edited).
        case invalid
        case anchor(AuditAnchor)
    }

    /// At most this many anchor objects are looked at (normally one; two after an interrupted
    /// write).
    static let searchLimit = 16

    /// Reads the anchor and checks its MAC in the HSM.
    /// - Throws: ``HSMError``.
    func read() async throws -> Reading {
        let template: [Attribute] = [.class(.data), .label(Self.label), .application(application)]
        let macKey = macKey
        return try await pool.withSession { session in
            let handles = try session.pkcs11.findObjects(template, limit: Self.searchLimit)
            if handles.isEmpty { return .missing }
            var newest: AuditAnchor?
            for handle in handles {
                guard let anchor = AuditAnchor(bytes: try session.pkcs11.attribute(.value, of: handle)) else { continue }
                let expected = try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: macKey), data: anchor.message)
                if constantTimeEqual(expected, anchor.mac), anchor.seq > newest?.seq ?? 0 { newest = anchor }
            }
            return newest.map(Reading.anchor) ?? .invalid
        }
    }

    /// MACs and stores the new head. Call only under the append lock, after checking that the
    /// log does not stand behind the current anchor.
    /// - Returns: the anchor written.
    /// - Throws: ``HSMError``.
    @discardableResult
    func write(seq: Int64, hash: [UInt8], previousHash: [UInt8]) async throws -> AuditAnchor {
        let template: [Attribute] = [.class(.data), .label(Self.label), .application(application)]
        let macKey = macKey
        return try await pool.withSession { session in
            let message = AuditAnchor.message(seq: seq, hash: hash, previousHash: previousHash)
            let mac = try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: macKey), data: message)
            let anchor = AuditAnchor(seq: seq, hash: hash, previousHash: previousHash, mac: mac)
            let old = try session.pkcs11.findObjects(template, limit: Self.searchLimit)
            // Private (user PIN to read), not modifiable or copyable: a value is replaced by a
            // new object, never edited.
            _ = try session.pkcs11.createObject(template + [
                .token(true), .private(true), .copyable(false), .dataValue(anchor.bytes), .modifiable(false),
            ])
            for handle in old { try session.pkcs11.destroyObject(handle) }
            return anchor
        }
    }

    /// Destroys every anchor object of this log (see ``AuditLog/resetAnchor(actor:)``).
    /// - Returns: how many objects were destroyed.
    func destroyAll() async throws -> Int {
        let template: [Attribute] = [.class(.data), .label(Self.label), .application(application)]
        return try await pool.withSession { session in
            let handles = try session.pkcs11.findObjects(template, limit: Self.searchLimit)
            for handle in handles { try session.pkcs11.destroyObject(handle) }
            return handles.count
        }
    }
}

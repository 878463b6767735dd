import Crypto
public import HSM
import PKCS11

/// The audit head kept in the HSM: a private token data object (`CKO_DATA`, label
/// `custos/audit/anchor`, `CKA_ID` derived from the log's identity) holding an ``AuditAnchor``.
///
/// Shared by every instance that uses the token, written only under the append lock, and
/// never moved backwards (``AuditLog`` refuses to append when the log stands behind it), so
/// deleting the newest entries — or copying an older anchor file back — is found. Reading or
/// writing it needs the user PIN, like every key on the token.
public struct AuditHSMAnchor: Sendable {
    public static let label = "custos/audit/anchor"
    static let application = "custos"

    let pool: SessionPool
    let macKey: HSMKey
    /// `CKA_ID`: several logs (databases, schemas) may share one token.
    let id: [UInt8]

    /// - Parameter logIdentity: names the log, e.g. database and schema.
    public init(pool: SessionPool, macKey: HSMKey, logIdentity: String) {
        self.pool = pool
        self.macKey = macKey
        id = Array(SHA256.hash(data: Array("custos/audit/anchor\0\(logIdentity)".utf8)).prefix(16))
    }

    /// What the token holds.
    enum Reading: Equatable {
        case missing
        /// An object is there but is not a MAC-valid anchor (written by someone else, or edited).
        case invalid
        case anchor(AuditAnchor)
    }

    private var key: HSMKey {
        let id = id
        return HSMKey(id: "audit-anchor:\(lowercaseHex(id))") { session in
            let found = try session.findObjects([.class(.data), .label(Self.label), .id(id)], limit: 2)
            guard let handle = found.first else { throw HSMError.keyNotFound(Self.label) }
            guard found.count == 1 else { throw HSMError.configuration("several objects are labelled \(Self.label)") }
            return handle
        }
    }

    /// Reads the anchor and checks its MAC in the HSM.
    /// - Throws: ``HSMError``.
    func read() async throws -> Reading {
        let key = key
        let macKey = macKey
        return try await pool.withSession { session in
            let handle: ObjectHandle
            do {
                handle = try session.handle(for: key)
            } catch HSMError.keyNotFound {
                return .missing
            }
            guard let anchor = AuditAnchor(bytes: try session.pkcs11.attribute(.value, of: handle)) else { return .invalid }
            let expected = try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: macKey), data: anchor.message)
            return constantTimeEqual(expected, anchor.mac) ? .anchor(anchor) : .invalid
        }
    }

    /// MACs and stores the new head, creating the object on first use. Call only under the
    /// append lock, after checking that the log does not stand behind the current anchor.
    /// - Returns: the anchor written.
    /// - Throws: ``HSMError``.
    @discardableResult
    func write(seq: Int64, hash: [UInt8], previousHash: [UInt8]) async throws -> AuditAnchor {
        let key = key
        let macKey = macKey
        let id = id
        return try await pool.withSession { session in
            let message = AuditAnchor.message(seq: seq, hash: hash, previousHash: previousHash)
            let mac = try session.pkcs11.sign(.sha256HMAC, key: try session.handle(for: macKey), data: message)
            let anchor = AuditAnchor(seq: seq, hash: hash, previousHash: previousHash, mac: mac)
            do {
                try session.pkcs11.setAttributes([.dataValue(anchor.bytes)], of: try session.handle(for: key))
            } catch HSMError.keyNotFound {
                // Private (user PIN to read or write), modifiable (it moves on every append), not
                // copyable: one anchor per log and token.
                _ = try session.pkcs11.createObject([
                    .class(.data), .token(true), .private(true), .modifiable(true), .copyable(false),
                    .label(Self.label), .application(Self.application), .id(id), .dataValue(anchor.bytes),
                ])
            }
            return anchor
        }
    }
}

import Crypto
import CustosModel
import HSM
import SecureMemory

/// The key states a database writer must not be able to undo, kept in the HSM: a private token
/// data object (`CKO_DATA`, label `custos/keys/states`, `CKA_APPLICATION` naming the database
/// and schema like the audit anchor) holding a MAC'd list of ``AnchoredKeyStates``.
///
/// A row MAC proves custody wrote a `key_versions` row once, not that the row is the newest: a
/// database writer with a backup could put an older row back, blob and MAC included — a
/// destroyed version's, or a version's from before it was disabled or scheduled for
/// destruction — and the key would compute again. The keyring refuses every use the list
/// forbids whatever the row says, and every change to it is written here before its database
/// transaction commits, so no crash leaves a committed change the list does not hold (a list
/// ahead of the database fails closed: start-up reconciliation rolls destructions forward).
///
/// Written under an advisory lock so two instances do not lose each other's changes; stored as
/// a ``TokenDataObject``, whose reader takes the MAC-valid value with the highest sequence
/// number, so a crash in the middle of a write loses nothing.
struct KeyStateAnchor: Sendable {
    static let label = "custos/keys/states"

    /// One key version.
    struct Entry: Sendable, Hashable, Comparable, CustomStringConvertible {
        let tenant: TenantID
        let purpose: KeyPurpose
        let version: Int

        static func < (lhs: Entry, rhs: Entry) -> Bool {
            (lhs.tenant.rawValue, lhs.purpose.rawValue, lhs.version) < (rhs.tenant.rawValue, rhs.purpose.rawValue, rhs.version)
        }

        var description: String { "\(tenant.rawValue) \(purpose.rawValue) \(version)" }
    }

    /// A MAC-valid list as read from the token.
    struct Contents: Sendable, Equatable {
        var seq: Int64
        var states: AnchoredKeyStates
        /// Every configured token answered and holds this list (with replica tokens, one may lag
        /// after a write that failed half-way, or lack it after a restore from shares).
        var onEveryToken = true
    }

    /// What the token holds.
    enum Reading: Sendable, Equatable {
        /// Never written (a new token, or one restored from shares: see ``TenantKeyring/reconcileKeyStateAnchor()``).
        case missing
        /// Objects are there but none carries a MAC-valid list: written by someone else, or edited.
        case invalid
        case contents(Contents)
    }

    let pool: SessionPool
    let object: TokenDataObject
    /// Bound into every MAC, so a list cannot be moved to another database's application.
    let identity: String
    /// The newest list this process read or wrote: while the token holding the newest is down,
    /// one that answers with an older list (or none) does not take the list back.
    let newestSeen = NewestAnchorSeen<AnchoredKeyStates>()

    /// - Parameter logIdentity: the database and schema, as the audit anchor names them.
    init(pool: SessionPool, logIdentity: String) {
        self.pool = pool
        identity = logIdentity
        let application = "custos/keys:" + Hex.encode(SHA256.hash(data: Array("\(Self.label)\0\(logIdentity)".utf8)).prefix(16))
        object = TokenDataObject(label: Self.label, application: application)
    }

    // MARK: Reading and writing

    /// Reads the list and checks its MAC in the HSM (under the root MAC key version it names).
    /// With replica tokens, the newest MAC-valid list of any token that answers: every write
    /// reaches every token, so a token that is down costs nothing, and one restored from shares
    /// (no list yet) does not hide the others'. While a token does not answer, never older than
    /// the newest list this process read or wrote (``newestSeen``): the token holding it may be
    /// the one that is down, and the one answering restored from shares or from an older backup
    /// while the service ran. With every token answering, the tokens have the last word (a list
    /// rebuilt by another process starts its sequence again).
    /// - Throws: ``HSMError`` when no token answers, or when no answering token holds a list
    ///   while another does not answer (it may hold one) and this process has seen none.
    func read() async throws -> Reading {
        let object = object
        var valuesByToken = [[[UInt8]]]()
        var unreachable: HSMError?
        for token in pool.tokenPools {
            do {
                valuesByToken.append(try await token.withSession { session in try object.values(in: session.pkcs11) })
            } catch let error as HSMError where error.isRetryable {
                unreachable = error
            }
        }
        if valuesByToken.isEmpty, let unreachable { throw unreachable }
        let seen = unreachable == nil ? nil : newestSeen.current.map { Contents(seq: $0.seq, states: $0.value, onEveryToken: false) }
        if valuesByToken.allSatisfy(\.isEmpty) {
            guard let unreachable else {
                newestSeen.forget()
                return .missing
            }
            // "Never written" only when every token says so: forbidding nothing on the word of
            // a replica restored from shares while the token with the list is down would give
            // a replayed row its use back.
            guard let seen else { throw unreachable }
            return .contents(seen)
        }
        var newest: Contents?
        var newestPerToken = [Int64]()
        for values in valuesByToken {
            var tokenNewest: Int64 = 0
            for bytes in values {
                guard let stored = Stored(bytes: bytes), stored.seq > tokenNewest else { continue }
                let message = Self.message(identity: identity, seq: stored.seq, body: stored.body)
                guard try await rootMACVerifies(stored.mac, of: message, macVersion: stored.macVersion, pool: pool) else { continue }
                tokenNewest = stored.seq
                if stored.seq > newest?.seq ?? 0 { newest = Contents(seq: stored.seq, states: AnchoredKeyStates(body: stored.body)) }
            }
            newestPerToken.append(tokenNewest)
        }
        guard var newest else { return .invalid }
        if let seen, seen.seq > newest.seq { return .contents(seen) }
        newest.onEveryToken = unreachable == nil && newestPerToken.allSatisfy { $0 == newest.seq }
        if unreachable == nil {
            newestSeen.replace(seq: newest.seq, value: newest.states)
        } else {
            newestSeen.raise(seq: newest.seq, value: newest.states)
        }
        return .contents(newest)
    }

    /// MACs and stores `states` as sequence number `seq` on every token (the first first). Call
    /// only under ``KeyStateAnchorStore/lock(on:)``, with everything the current list holds. A
    /// token that cannot be written fails the write, and with it the change's transaction: a
    /// change is never anchored on some tokens only for good (those written are ahead, which
    /// fails closed). A crash between tokens leaves older lists on the rest, which ``read()``
    /// outranks by sequence number.
    /// - Throws: ``HSMError``.
    func write(_ states: AnchoredKeyStates, seq: Int64, rootKeys: RootKeys) async throws {
        let body = states.body
        let mac = try await pool.hmacSHA256(key: rootKeys.mac, data: Self.message(identity: identity, seq: seq, body: body))
        let bytes = Stored(seq: seq, macVersion: rootKeys.macVersion, body: body, mac: mac).bytes
        let object = object
        for token in pool.tokenPools {
            try await token.withSession { session in try object.replace(with: bytes, in: session.pkcs11) }
            // On a token now, even if the next fails: a list ahead of the database fails closed.
            newestSeen.raise(seq: seq, value: states)
        }
    }

    // MARK: Encoding

    /// What the root MAC key signs.
    static func message(identity: String, seq: Int64, body: [UInt8]) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: "custos/keys/states/v1")
        encoding.append(identity)
        encoding.append(seq)
        encoding.append(body)
        return encoding.bytes
    }

    /// The token value: format byte, sequence (8 bytes, big-endian), MAC key version (4 bytes),
    /// body length (4 bytes), body, MAC (32 bytes).
    struct Stored {
        static let format: UInt8 = 1
        let seq: Int64
        let macVersion: Int
        let body: [UInt8]
        let mac: [UInt8]

        init(seq: Int64, macVersion: Int, body: [UInt8], mac: [UInt8]) {
            self.seq = seq
            self.macVersion = macVersion
            self.body = body
            self.mac = mac
        }

        var bytes: [UInt8] {
            var bytes = [Self.format]
            withUnsafeBytes(of: UInt64(bitPattern: seq).bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: macVersion).bigEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: body.count).bigEndian) { bytes.append(contentsOf: $0) }
            return bytes + body + mac
        }

        init?(bytes: [UInt8]) {
            guard bytes.count >= 17 + 32, bytes[0] == Self.format else { return nil }
            func integer(_ range: Range<Int>) -> UInt64 { bytes[range].reduce(0) { $0 << 8 | UInt64($1) } }
            let length = Int(integer(13 ..< 17))
            guard bytes.count == 17 + length + 32 else { return nil }
            self.init(
                seq: Int64(bitPattern: integer(1 ..< 9)), macVersion: Int(integer(9 ..< 13)),
                body: Array(bytes[17 ..< 17 + length]), mac: Array(bytes[(17 + length)...])
            )
        }
    }
}

import Crypto
import CustosModel
import HSM
import SecureMemory

/// The key versions destroyed so far, kept in the HSM: a private token data object (`CKO_DATA`,
/// label `custos/keys/destroyed`, `CKA_APPLICATION` naming the database and schema like the
/// audit anchor) holding a MAC'd list.
///
/// A row MAC proves custody wrote a `key_versions` row once, not that the row is the newest: a
/// database writer with a backup could put a destroyed version's row back, blob and MAC included,
/// and the key would compute again. The keyring refuses every version listed here whatever its
/// row says, so a destruction is undone neither by a replayed row nor by a replayed database.
///
/// Only ever grows (a destroyed version number is never reused, DESIGN §5); written under an
/// advisory lock so two instances do not lose each other's additions; stored as a
/// ``TokenDataObject``, whose reader takes the MAC-valid value with the highest sequence
/// number, so a crash in the middle of a write loses nothing.
struct DestroyedVersionsAnchor: Sendable {
    static let label = "custos/keys/destroyed"

    /// One destroyed version.
    struct Entry: Sendable, Hashable, Comparable {
        let tenant: TenantID
        let purpose: KeyPurpose
        let version: Int

        static func < (lhs: Entry, rhs: Entry) -> Bool {
            (lhs.tenant.rawValue, lhs.purpose.rawValue, lhs.version) < (rhs.tenant.rawValue, rhs.purpose.rawValue, rhs.version)
        }
    }

    /// A MAC-valid list as read from the token.
    struct Contents: Sendable, Equatable {
        var seq: Int64
        var entries: Set<Entry>
        /// Every configured token answered and holds this list (with replica tokens, one may lag
        /// after a write that failed half-way, or lack it after a restore from shares).
        var onEveryToken = true
    }

    /// What the token holds.
    enum Reading: Sendable, Equatable {
        /// Never written (a new token, or one restored from shares: see ``TenantKeyring/reconcileDestructionAnchor()``).
        case missing
        /// Objects are there but none carries a MAC-valid list: written by someone else, or edited.
        case invalid
        case contents(Contents)
    }

    let pool: SessionPool
    let object: TokenDataObject
    /// Bound into every MAC, so a list cannot be moved to another database's application.
    let identity: String

    /// - Parameter logIdentity: the database and schema, as the audit anchor names them.
    init(pool: SessionPool, logIdentity: String) {
        self.pool = pool
        identity = logIdentity
        let application = "custos/keys:" + Hex.encode(SHA256.hash(data: Array("custos/keys/destroyed\0\(logIdentity)".utf8)).prefix(16))
        object = TokenDataObject(label: Self.label, application: application)
    }

    // MARK: Reading and writing

    /// Reads the list and checks its MAC in the HSM (under the root MAC key version it names).
    /// With replica tokens, the newest MAC-valid list of any token that answers: every write
    /// reaches every token, so a token that is down costs nothing, and one restored from shares
    /// (no list yet) does not hide the others'.
    /// - Throws: ``HSMError`` when no token answers.
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
        if valuesByToken.allSatisfy(\.isEmpty) { return .missing }
        var newest: Contents?
        var newestPerToken = [Int64]()
        for values in valuesByToken {
            var tokenNewest: Int64 = 0
            for bytes in values {
                guard let stored = Stored(bytes: bytes), stored.seq > tokenNewest else { continue }
                let message = Self.message(identity: identity, seq: stored.seq, body: stored.body)
                guard try await rootMACVerifies(stored.mac, of: message, macVersion: stored.macVersion, pool: pool) else { continue }
                tokenNewest = stored.seq
                if stored.seq > newest?.seq ?? 0 { newest = Contents(seq: stored.seq, entries: stored.entries) }
            }
            newestPerToken.append(tokenNewest)
        }
        guard var newest else { return .invalid }
        newest.onEveryToken = unreachable == nil && newestPerToken.allSatisfy { $0 == newest.seq }
        return .contents(newest)
    }

    /// MACs and stores `entries` as sequence number `seq` on every token (the first first). Call
    /// only under ``KeyVersionStore/lockDestructionAnchor(on:)``, with everything the current
    /// list holds. A token that cannot be written fails the write, and the destruction's
    /// pending line stays for reconciliation to write again: a destruction is never anchored on
    /// some tokens only for good. A crash between tokens leaves older lists on the rest, which
    /// ``read()`` outranks by sequence number.
    /// - Throws: ``HSMError``.
    func write(_ entries: Set<Entry>, seq: Int64, rootKeys: RootKeys) async throws {
        let body = Self.body(entries)
        let mac = try await pool.hmacSHA256(key: rootKeys.mac, data: Self.message(identity: identity, seq: seq, body: body))
        let bytes = Stored(seq: seq, macVersion: rootKeys.macVersion, body: body, mac: mac).bytes
        let object = object
        for token in pool.tokenPools {
            try await token.withSession { session in try object.replace(with: bytes, in: session.pkcs11) }
        }
    }

    // MARK: Encoding

    /// What the root MAC key signs.
    static func message(identity: String, seq: Int64, body: [UInt8]) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: "custos/keys/destroyed/v1")
        encoding.append(identity)
        encoding.append(seq)
        encoding.append(body)
        return encoding.bytes
    }

    /// One line per entry, sorted: `<tenant> <purpose> <version>\n` (ids only, nothing secret).
    static func body(_ entries: Set<Entry>) -> [UInt8] {
        Array(entries.sorted().map { "\($0.tenant.rawValue) \($0.purpose.rawValue) \($0.version)\n" }.joined().utf8)
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

        /// The body's entries; a line that does not parse is skipped (the MAC covers the body,
        /// so only custody wrote it).
        var entries: Set<Entry> {
            var entries = Set<Entry>()
            for line in String(decoding: body, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 3, let tenant = TenantID(String(fields[0])),
                      let purpose = KeyPurpose(rawValue: String(fields[1])), let version = Int(fields[2]) else { continue }
                entries.insert(Entry(tenant: tenant, purpose: purpose, version: version))
            }
            return entries
        }
    }
}

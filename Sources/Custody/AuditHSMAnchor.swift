import Crypto
public import HSM
import SecureMemory

/// The audit head kept in the HSM: a private token data object (`CKO_DATA`, label
/// `custos/audit/anchor`, `CKA_APPLICATION` naming the log, since several databases or schemas
/// may share a token) holding an ``AuditAnchor``.
///
/// Shared by every instance that uses the token, written only under the append lock, and
/// never moved backwards (``AuditLog`` refuses to append when the log stands behind it), so
/// deleting the newest entries — or copying an older anchor file back — is found. Reading or
/// writing it needs the user PIN, like every key on the token.
///
/// Stored as a ``TokenDataObject``: a reader takes the MAC-valid value with the highest sequence
/// number, so a crash in the middle of a write loses nothing.
public struct AuditHSMAnchor: Sendable {
    public static let label = "custos/audit/anchor"

    let pool: SessionPool
    let macKey: HSMKey
    /// `CKA_APPLICATION`: `custos/audit:` and 16 bytes of SHA-256 of the log's identity, in hex.
    let object: TokenDataObject
    /// The newest anchor this process read or wrote: a token that was out of service during
    /// appends answers with an older one, and when the token holding the newest does not answer
    /// the anchor would otherwise move back to where entries deleted since then are not missed.
    let newestSeen = NewestAnchorSeen<AuditAnchor>()

    /// - Parameter logIdentity: names the log, e.g. database and schema.
    public init(pool: SessionPool, macKey: HSMKey, logIdentity: String) {
        self.pool = pool
        self.macKey = macKey
        let application = "custos/audit:" + Hex.encode(SHA256.hash(data: Array("custos/audit/anchor\0\(logIdentity)".utf8)).prefix(16))
        object = TokenDataObject(label: Self.label, application: application)
    }

    /// What the token holds.
    enum Reading: Equatable {
        case missing
        /// Objects are there but none is a MAC-valid anchor (written by someone else, or edited).
        case invalid
        case anchor(AuditAnchor)
    }

    /// Reads the anchor and checks its MAC in the HSM. With replica tokens, the newest
    /// MAC-valid anchor of any token that answers (a token that was out of service during
    /// appends holds an older one). While a token does not answer, never older than the newest
    /// this process read or wrote (``newestSeen``): the token holding the newest may be the one
    /// that is down. With every token answering the tokens have the last word, so an officer's
    /// `audit reset-anchor` (its own process) applies to running instances too.
    /// - Throws: ``HSMError`` when no token answers.
    func read() async throws -> Reading {
        var readings = [Reading]()
        var unreachable: HSMError?
        for token in pool.tokenPools {
            let values: [[UInt8]]
            do {
                values = try await token.withSession { [object] session in try object.values(in: session.pkcs11) }
            } catch let error as HSMError where error.isRetryable && pool.tokenPools.count > 1 {
                unreachable = error
                continue
            }
            readings.append(try await newestValid(values))
        }
        if readings.isEmpty, let unreachable { throw unreachable }
        let anchors = readings.compactMap { reading -> AuditAnchor? in if case .anchor(let anchor) = reading { anchor } else { nil } }
        let newest = anchors.max(by: { $0.seq < $1.seq })
        if unreachable == nil {
            // Every token answered: theirs is the anchor, even an older one an officer reset.
            if let newest { newestSeen.replace(seq: newest.seq, value: newest) } else { newestSeen.forget() }
            return newest.map(Reading.anchor) ?? (readings.contains(.invalid) ? .invalid : .missing)
        }
        let seen = newestSeen.current?.value
        if let newest {
            if let seen, seen.seq > newest.seq { return .anchor(seen) }
            newestSeen.raise(seq: newest.seq, value: newest)
            return .anchor(newest)
        }
        if readings.contains(.invalid) { return .invalid }
        return seen.map(Reading.anchor) ?? .missing
    }

    /// The MAC-valid anchor with the highest sequence number among one token's `values`. The MACs
    /// are checked through the pool (a token in service), never with the key of the token that
    /// holds them: a replica out for its keys (another root, or a second key planted under the
    /// MAC label) would vouch for its own anchors, or fail every append on its duplicate label.
    private func newestValid(_ values: [[UInt8]]) async throws -> Reading {
        if values.isEmpty { return .missing }
        var newest: AuditAnchor?
        for bytes in values {
            guard let anchor = AuditAnchor(bytes: bytes), anchor.seq > newest?.seq ?? 0 else { continue }
            let expected = try await pool.hmacSHA256(key: macKey, data: anchor.message)
            if constantTimeEqual(expected, anchor.mac) { newest = anchor }
        }
        return newest.map(Reading.anchor) ?? .invalid
    }

    /// MACs and stores the new head on every token that answers (with replica tokens, one out
    /// of service is skipped and catches up with the next append after its return; ``read()``
    /// takes the newest, so appends go on while any token serves). Call only under the append
    /// lock, after checking that the log does not stand behind the current anchor.
    /// - Returns: the anchor written.
    /// - Throws: ``HSMError`` when no token took it.
    @discardableResult
    func write(seq: Int64, hash: [UInt8], previousHash: [UInt8]) async throws -> AuditAnchor {
        // MAC'd once, through the pool (a token in service), as ``newestValid(_:)`` checks it.
        let message = AuditAnchor.message(seq: seq, hash: hash, previousHash: previousHash)
        let anchor = AuditAnchor(seq: seq, hash: hash, previousHash: previousHash, mac: try await pool.hmacSHA256(key: macKey, data: message))
        var written = false
        var unreachable: HSMError?
        for token in pool.tokenPools {
            do {
                try await token.withSession { [object] session in try object.replace(with: anchor.bytes, in: session.pkcs11) }
                newestSeen.raise(seq: anchor.seq, value: anchor)
                written = true
            } catch let error as HSMError where error.isRetryable && pool.tokenPools.count > 1 {
                unreachable = error
            }
        }
        guard written else { throw unreachable ?? HSMError.notRunning }
        return anchor
    }

    /// Destroys every anchor object of this log (see ``AuditLog/resetAnchor(actor:)``).
    /// - Returns: how many objects were destroyed.
    func destroyAll() async throws -> Int {
        let object = object
        var destroyed = 0
        // On purpose, by an officer: the next append starts the anchor afresh.
        newestSeen.forget()
        for token in pool.tokenPools {
            destroyed += try await token.withSession { session in try object.destroyAll(in: session.pkcs11) }
        }
        return destroyed
    }
}

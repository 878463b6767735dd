public import CustosModel
import Crypto
import Foundation
public import HSM
import SecureMemory
public import Storage

#if canImport(Glibc)
import Glibc
#endif

/// The tamper-evident audit log (DESIGN §9): each entry carries the hash of the previous one
/// and an HSM HMAC; appends are serialised by an advisory transaction lock. Deleting the newest
/// entries leaves a valid-looking chain, so the head (sequence number, hash and predecessor's
/// hash, MAC'd) is also anchored outside PostgreSQL, under the same lock: in the HSM, as a data
/// object every instance shares and that never moves backwards (``AuditHSMAnchor``), and in an
/// append-only file per instance.
///
/// Entries never hold secret values, names, emails or subject references.
public final class AuditLog: Sendable {
    let pool: SessionPool
    let database: Database
    let rootKeys: RootKeys
    /// This instance's append-only anchor file (`nil`: none; the HSM anchor still applies).
    public let anchorPath: String?
    let hsmAnchor: AuditHSMAnchor

    static let entryDomain = "custos/audit/v1"
    static let macDomain = "custos/audit/v1/mac"
    static let anchorDomain = "custos/audit/v1/anchor"

    public init(pool: SessionPool, database: Database, rootKeys: RootKeys = RootKeys(), anchorPath: String?) {
        self.pool = pool
        self.database = database
        self.rootKeys = rootKeys
        self.anchorPath = anchorPath
        hsmAnchor = AuditHSMAnchor(
            pool: pool, macKey: rootKeys.mac, logIdentity: "\(database.configuration.database)/\(database.schema)"
        )
    }

    /// The newest `limit` entries, oldest first (what `custos audit tail` shows).
    /// - Throws: ``CustodyError``.
    public func tail(limit: Int) async throws -> [AuditEntryRecord] {
        try await custody {
            try await database.withTransaction(context: "audit tail") { connection in
                let head = try await AuditLogStore.head(on: connection)?.seq ?? 0
                return try await AuditLogStore.entries(after: max(0, head - Int64(limit)), limit: limit, on: connection)
            }
        }
    }

    /// Appends one entry in a transaction of its own.
    /// - Parameters:
    ///   - details: non-secret facts (key versions, KCVs, counts); stored as JSON.
    /// - Throws: ``CustodyError``.
    @discardableResult
    public func append(tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String]) async throws -> Int64 {
        try await custody {
            try await database.withTransaction(context: "append audit entry") { connection in
                try await self.append(tenant: tenant, actor: actor, action: action, target: target, details: details, on: connection)
            }
        }
    }

    /// Appends one entry inside the caller's open transaction, so that the audited action and
    /// its entry commit or roll back together: no action without its entry.
    ///
    /// Takes the append lock, which every appender (on every instance) then waits for until
    /// this transaction ends: call it as the transaction's last statement, after the action's
    /// own writes and checks.
    /// - Parameters:
    ///   - connection: inside ``Database/withTransaction(context:_:)`` or
    ///     ``Database/withTenant(_:context:timeout:_:)`` of this log's database.
    ///   - details: non-secret facts (key versions, KCVs, counts); stored as JSON.
    /// - Returns: the entry's sequence number.
    /// - Throws: ``CustodyError``; ``CustodyError/auditLogBehindAnchor(anchoredSeq:logSeq:)`` when
    ///   the log stands behind its HSM anchor (entries deleted): the caller's transaction must
    ///   then roll back.
    @discardableResult
    public func append(
        tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String],
        on connection: DatabaseTransaction
    ) async throws -> Int64 {
        try await custody {
            let detailsText = Self.json(details)
            let milliseconds = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            try await AuditLogStore.lockForAppend(on: connection)
            let head = try await authenticHead(on: connection)
            try await requireNotBehindAnchor(head: head, on: connection)
            // An authentic head was made by an append: its successor's number cannot overflow.
            let seq = (head?.seq ?? 0) + 1
            let previous = head?.hash ?? [UInt8](repeating: 0, count: 32)
            let hash = Self.entryHash(
                previous: previous, seq: seq, milliseconds: milliseconds, tenant: tenant, actor: actor,
                action: action.rawValue, target: target, details: detailsText
            )
            let mac = try await pool.hmacSHA256(key: rootKeys.mac, data: Self.macMessage(seq: seq, hash: hash))
            try await AuditLogStore.insert(AuditEntryRecord(
                seq: seq, at: Date(timeIntervalSince1970: Double(milliseconds) / 1000), tenant: tenant, actor: actor,
                action: action.rawValue, target: target, details: detailsText, previousHash: previous, entryHash: hash, mac: mac,
                macKeyVersion: rootKeys.macVersion
            ), on: connection)
            // Still under the lock: the anchors move in append order. Should this transaction
            // roll back, the anchors name an entry the log never got, with its predecessor as
            // the log's head: a state verification accepts (``AuditAnchor/Standing/newestAbsent``).
            let anchor = try await hsmAnchor.write(seq: seq, hash: hash, previousHash: previous)
            try writeAnchorLine(anchor)
            return seq
        }
    }

    /// After a sanctioned restore of PostgreSQL to an older point, the log stands behind its
    /// HSM anchor and appends are refused. This officer step drops the HSM anchor and sets this
    /// instance's anchor file aside (renamed, never deleted), then records the reset — with the
    /// head the anchor had recorded — as the first entry of the new anchor, all under the append
    /// lock in one transaction. Other instances' anchor files must be set aside by hand.
    /// - Returns: the sequence number the HSM anchor had recorded (`nil`: there was none).
    /// - Throws: ``CustodyError``.
    @discardableResult
    public func resetAnchor(actor: String) async throws -> Int64? {
        try await custody {
            let hsmAnchor = hsmAnchor
            return try await database.withTransaction(context: "reset audit anchor") { connection in
                try await AuditLogStore.lockForAppend(on: connection)
                // Checked before the anchor goes: a planted head would refuse the append below
                // only after the HSM anchor and the anchor file were set aside.
                let head = try await self.authenticHead(on: connection)
                let previous: Int64? = if case .anchor(let anchor) = try await hsmAnchor.read() { anchor.seq } else { nil }
                let destroyed = try await hsmAnchor.destroyAll()
                if let anchorPath = self.anchorPath, FileManager.default.fileExists(atPath: anchorPath) {
                    let aside = anchorPath + ".before-reset-\(Int64(Date().timeIntervalSince1970))"
                    guard rename(anchorPath, aside) == 0 else {
                        throw CustodyError.storage(.configuration("cannot set the audit anchor file \(anchorPath) aside"))
                    }
                }
                try await self.append(
                    tenant: nil, actor: actor, action: .auditAnchorReset, target: "audit",
                    details: [
                        "previous_anchored_seq": previous.map(String.init) ?? "none", "log_seq": "\(head?.seq ?? 0)",
                        "objects_destroyed": "\(destroyed)",
                    ],
                    on: connection
                )
                return previous
            }
        }
    }

    /// The newest entry, checked against its MAC: a row the database's writer planted (any
    /// sequence number, `Int64.max` included) or altered is never chained onto — nor its number
    /// trusted (helper-71: a planted `Int64.max` trapped every append, and so every instance).
    private func authenticHead(on connection: DatabaseTransaction) async throws -> (seq: Int64, hash: [UInt8])? {
        guard let head = try await AuditLogStore.headForAppend(on: connection) else { return nil }
        guard try await macVerdict(seq: head.seq, hash: head.hash, mac: head.mac, macKeyVersion: head.macKeyVersion) == .valid else {
            throw CustodyError.auditLogHeadInvalid(seq: head.seq)
        }
        return (head.seq, head.hash)
    }

    /// The HSM anchor never moves backwards: appending to a log that stands behind it would
    /// overwrite the evidence of the deletion.
    private func requireNotBehindAnchor(head: (seq: Int64, hash: [UInt8])?, on connection: DatabaseTransaction) async throws {
        switch try await hsmAnchor.read() {
        case .missing:
            // A fresh token (or one restored from shares: data objects are not in the shares).
            return
        case .invalid:
            throw CustodyError.auditAnchorInvalid
        case .anchor(let anchor):
            let standing = try await anchor.standing(head: head) { seq in
                try await AuditLogStore.entries(after: seq - 1, limit: 1, on: connection).first.flatMap { $0.seq == seq ? $0.entryHash : nil }
            }
            switch standing {
            case .confirmed, .newestAbsent: return
            case .truncated, .diverged: throw CustodyError.auditLogBehindAnchor(anchoredSeq: anchor.seq, logSeq: head?.seq ?? 0)
            }
        }
    }

    /// The outcome of ``verify()``.
    public struct Verification: Sendable, Codable, Equatable {
        public let entriesChecked: Int64
        /// The first entry that fails (sequence number and why), if any.
        public let firstBroken: Int64?
        public let problem: String?
        /// The newest head confirmed by an anchor outside PostgreSQL (HSM or this instance's file).
        public let anchoredSeq: Int64?
        /// The HSM anchor's sequence number; `nil` when this token holds none for this log (a
        /// fresh or restored token: the next append creates it).
        public let hsmAnchoredSeq: Int64?
        /// An anchored entry that is absent while its predecessor ends the log: its transaction
        /// rolled back, or the single newest entry was deleted (the two look alike).
        public let unconfirmedSeq: Int64?
        public var isIntact: Bool { firstBroken == nil && problem == nil }

        init(
            entriesChecked: Int64, firstBroken: Int64? = nil, problem: String? = nil, anchoredSeq: Int64? = nil,
            hsmAnchoredSeq: Int64? = nil, unconfirmedSeq: Int64? = nil
        ) {
            self.entriesChecked = entriesChecked
            self.firstBroken = firstBroken
            self.problem = problem
            self.anchoredSeq = anchoredSeq
            self.hsmAnchoredSeq = hsmAnchoredSeq
            self.unconfirmedSeq = unconfirmedSeq
        }
    }

    /// Walks the whole chain: sequence numbers contiguous from 1, each hash recomputed from the
    /// entry and its predecessor, each MAC recomputed in the HSM; then compares the head with
    /// the HSM anchor and with the highest MAC-valid line of this instance's anchor file (lines
    /// other instances' appends passed are fine). Reports the first broken entry.
    public func verify() async throws -> Verification {
        try await custody {
            var expectedSeq: Int64 = 1
            var previous = [UInt8](repeating: 0, count: 32)
            var checked: Int64 = 0
            var entries = [AuditEntryRecord]()
            repeat {
                let after = expectedSeq - 1
                entries = try await database.withTransaction(context: "read audit log") { connection in
                    try await AuditLogStore.entries(after: after, limit: 500, on: connection)
                }
                for entry in entries {
                    if let problem = try await check(entry, expectedSeq: expectedSeq, previous: previous) {
                        return Verification(entriesChecked: checked, firstBroken: problem.seq, problem: problem.reason)
                    }
                    previous = entry.entryHash
                    expectedSeq += 1
                    checked += 1
                }
            } while entries.count == 500
            let head: (seq: Int64, hash: [UInt8])? = checked > 0 ? (checked, previous) : nil
            let database = database
            let hashAt: @Sendable (Int64) async throws -> [UInt8]? = { seq in
                try await database.withTransaction(context: "read anchored audit entry") { connection in
                    try await AuditLogStore.entries(after: seq - 1, limit: 1, on: connection).first.flatMap { $0.seq == seq ? $0.entryHash : nil }
                }
            }
            var anchoredSeq: Int64?
            var unconfirmedSeq: Int64?
            var hsmAnchoredSeq: Int64?
            // The HSM anchor, then this instance's file: each must agree with the log.
            var anchors = [(source: String, anchor: AuditAnchor)]()
            switch try await hsmAnchor.read() {
            case .missing: break
            case .invalid:
                return Verification(entriesChecked: checked, problem: "the HSM's audit anchor fails its MAC")
            case .anchor(let anchor):
                hsmAnchoredSeq = anchor.seq
                anchors.append(("the HSM anchor", anchor))
            }
            if anchorPath != nil {
                switch try await newestValidAnchorLine() {
                case .none: break
                case .some(nil):
                    return Verification(entriesChecked: checked, problem: "no line of the anchor file \(anchorPath ?? "") carries a valid MAC", hsmAnchoredSeq: hsmAnchoredSeq)
                case .some(let anchor?):
                    anchors.append(("the anchor file", anchor))
                }
            }
            for (source, anchor) in anchors {
                switch try await anchor.standing(head: head, hashAt: hashAt) {
                case .confirmed:
                    anchoredSeq = Swift.max(anchoredSeq ?? 0, anchor.seq)
                case .newestAbsent:
                    anchoredSeq = Swift.max(anchoredSeq ?? 0, anchor.seq - 1)
                    unconfirmedSeq = Swift.max(unconfirmedSeq ?? 0, anchor.seq)
                case .truncated(let firstMissing):
                    return Verification(
                        entriesChecked: checked, firstBroken: firstMissing,
                        problem: "entries from \(firstMissing) on were deleted (\(source) recorded entry \(anchor.seq))",
                        anchoredSeq: anchor.seq, hsmAnchoredSeq: hsmAnchoredSeq
                    )
                case .diverged(let seq):
                    return Verification(
                        entriesChecked: checked, firstBroken: seq, problem: "entry \(seq) differs from the head \(source) recorded",
                        anchoredSeq: anchor.seq, hsmAnchoredSeq: hsmAnchoredSeq
                    )
                }
            }
            if unconfirmedSeq != nil, anchoredSeq.map({ $0 >= unconfirmedSeq! }) == true { unconfirmedSeq = nil }
            return Verification(
                entriesChecked: checked, anchoredSeq: anchoredSeq, hsmAnchoredSeq: hsmAnchoredSeq, unconfirmedSeq: unconfirmedSeq
            )
        }
    }

    private func check(_ entry: AuditEntryRecord, expectedSeq: Int64, previous: [UInt8]) async throws -> (seq: Int64, reason: String)? {
        if entry.seq != expectedSeq {
            return (expectedSeq, "entry \(expectedSeq) is missing (next is \(entry.seq))")
        }
        if entry.previousHash != previous {
            return (entry.seq, "entry \(entry.seq) does not link to entry \(entry.seq - 1)")
        }
        let milliseconds = Int64((entry.at.timeIntervalSince1970 * 1000).rounded())
        let hash = Self.entryHash(
            previous: entry.previousHash, seq: entry.seq, milliseconds: milliseconds, tenant: entry.tenant,
            actor: entry.actor, action: entry.action, target: entry.target, details: entry.details
        )
        if hash != entry.entryHash {
            return (entry.seq, "entry \(entry.seq) was changed (its hash does not match its content)")
        }
        switch try await macVerdict(seq: entry.seq, hash: entry.entryHash, mac: entry.mac, macKeyVersion: entry.macKeyVersion) {
        case .valid: return nil
        case .wrong: return (entry.seq, "entry \(entry.seq) has a wrong MAC")
        case .unknownKey: return (entry.seq, "entry \(entry.seq) names MAC key v\(entry.macKeyVersion), which the token does not hold")
        }
    }

    /// Whether the log holds an entry of `action` whose hash and MAC check: a fact custody
    /// recorded, which the database's writer (INSERT only on `audit_log`) can neither forge nor
    /// remove. The chain around it is `custos audit verify`'s to check.
    func hasAuthenticEntry(action: AuditAction) async throws -> Bool {
        let candidates = try await database.withTransaction(context: "read audit entries") { connection in
            try await AuditLogStore.entries(action: action.rawValue, limit: 16, on: connection)
        }
        for entry in candidates where try await isAuthentic(entry) { return true }
        return false
    }

    /// Entries ``newestAuthenticEntry(action:tenant:on:)`` looks at: the writer can insert
    /// entries (never authentic ones) above the newest genuine one, and may make the answer
    /// ``NewestAuditEntry/forged`` that way, never another genuine entry's.
    public static let newestEntryWindow = 16

    /// The newest entry of `action` for `tenant` whose hash and MAC check. Entries cannot be
    /// changed or removed by the service role, so it is the newest one Custos wrote.
    /// - Throws: ``CustodyError``.
    public func newestAuthenticEntry(action: AuditAction, tenant: TenantID, on connection: DatabaseTransaction) async throws -> NewestAuditEntry {
        try await custody {
            let entries = try await AuditLogStore.newestEntries(action: action.rawValue, tenant: tenant, limit: Self.newestEntryWindow, on: connection)
            guard !entries.isEmpty else { return .none }
            for entry in entries where try await isAuthentic(entry) {
                let object = try? JSONSerialization.jsonObject(with: Data(entry.details.utf8))
                return .authentic(details: object as? [String: String] ?? [:])
            }
            return .forged
        }
    }

    private func isAuthentic(_ entry: AuditEntryRecord) async throws -> Bool {
        let milliseconds = Int64((entry.at.timeIntervalSince1970 * 1000).rounded())
        let hash = Self.entryHash(
            previous: entry.previousHash, seq: entry.seq, milliseconds: milliseconds, tenant: entry.tenant,
            actor: entry.actor, action: entry.action, target: entry.target, details: entry.details
        )
        guard hash == entry.entryHash else { return false }
        if case .valid = try await macVerdict(seq: entry.seq, hash: hash, mac: entry.mac, macKeyVersion: entry.macKeyVersion) { return true }
        return false
    }

    private enum MACVerdict { case valid, wrong, unknownKey }

    /// An entry's MAC checked under the MAC key version it names. A version the token does not
    /// hold is a finding about the entry, not an HSM outage (helper-75: a planted head naming
    /// v999 made every audited call UNAVAILABLE and `audit verify` abort).
    private func macVerdict(seq: Int64, hash: [UInt8], mac: [UInt8], macKeyVersion: Int) async throws -> MACVerdict {
        let expected: [UInt8]
        do {
            expected = try await pool.hmacSHA256(key: RootKeys(macVersion: macKeyVersion).mac, data: Self.macMessage(seq: seq, hash: hash))
        } catch HSMError.keyNotFound {
            return .unknownKey
        }
        return constantTimeEqual(expected, mac) ? .valid : .wrong
    }

    // MARK: Encoding

    static func entryHash(
        previous: [UInt8], seq: Int64, milliseconds: Int64, tenant: TenantID?, actor: String, action: String,
        target: String, details: String
    ) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: entryDomain)
        encoding.append(previous)
        encoding.append(seq)
        encoding.append(milliseconds)
        encoding.append(optional: tenant?.rawValue)
        encoding.append(actor)
        encoding.append(action)
        encoding.append(target)
        encoding.append(details)
        return Array(SHA256.hash(data: encoding.bytes))
    }

    static func macMessage(seq: Int64, hash: [UInt8]) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: macDomain)
        encoding.append(seq)
        encoding.append(hash)
        return encoding.bytes
    }

    static func anchorMessage(seq: Int64, hash: [UInt8]) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: anchorDomain)
        encoding.append(seq)
        encoding.append(hash)
        return encoding.bytes
    }

    static func json(_ details: [String: String]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: details, options: [.sortedKeys]) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: Anchor file

    /// Appends the anchor as one line with one `write` (`O_APPEND`: never interleaved with
    /// another writer's line), under the append lock.
    private func writeAnchorLine(_ anchor: AuditAnchor) throws {
        guard let anchorPath else { return }
        let descriptor = open(anchorPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw CustodyError.storage(.configuration("cannot open audit anchor \(anchorPath)")) }
        defer { close(descriptor) }
        let bytes = Array(anchor.line.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw CustodyError.storage(.configuration("cannot write audit anchor \(anchorPath)")) }
    }

    /// The highest-sequence line of the anchor file whose MAC is valid: `nil` when the file is
    /// missing or empty, `.some(nil)` when it has lines but none is valid. Torn or foreign lines
    /// are skipped, so a line cut short by a crash does not hide the good ones before it.
    private func newestValidAnchorLine() async throws -> AuditAnchor?? {
        guard let anchorPath, let data = FileManager.default.contents(atPath: anchorPath) else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        guard !lines.isEmpty else { return nil }
        for anchor in lines.compactMap(AuditAnchor.init(line:)).sorted(by: { $0.seq > $1.seq }) {
            let expected = try await pool.hmacSHA256(key: rootKeys.mac, data: anchor.message)
            if constantTimeEqual(expected, anchor.mac) { return .some(anchor) }
        }
        return .some(nil)
    }
}

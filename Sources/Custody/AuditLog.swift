public import CustosModel
import Crypto
import Foundation
public import HSM
public import Storage

#if canImport(Glibc)
import Glibc
#endif

/// The tamper-evident audit log (DESIGN §9): each entry carries the hash of the previous one
/// and an HSM HMAC; appends are serialised by an advisory lock; the head (sequence number and
/// hash, MAC'd) is also appended to a file outside PostgreSQL, so that deleting the newest
/// entries — which leaves a valid-looking chain — is detected too.
///
/// Entries never hold secret values, names, emails or subject references.
public final class AuditLog: Sendable {
    let pool: SessionPool
    let database: Database
    let rootKeys: RootKeys
    /// The append-only anchor file (`nil`: no anchor; verification then says so).
    public let anchorPath: String?

    static let entryDomain = "custos/audit/v1"
    static let macDomain = "custos/audit/v1/mac"
    static let anchorDomain = "custos/audit/v1/anchor"

    public init(pool: SessionPool, database: Database, rootKeys: RootKeys = RootKeys(), anchorPath: String?) {
        self.pool = pool
        self.database = database
        self.rootKeys = rootKeys
        self.anchorPath = anchorPath
    }

    /// Appends one entry.
    /// - Parameters:
    ///   - details: non-secret facts (key versions, KCVs, counts); stored as JSON.
    /// - Throws: ``CustodyError``.
    @discardableResult
    public func append(tenant: TenantID?, actor: String, action: String, target: String, details: [String: String]) async throws -> Int64 {
        try await custody {
            let detailsText = Self.json(details)
            let milliseconds = Int64((Date().timeIntervalSince1970 * 1000).rounded())
            let pool = self.pool
            let macKey = rootKeys.mac
            let macVersion = rootKeys.macVersion
            let (seq, hash, anchorMAC) = try await database.withTransaction(context: "append audit entry") { connection in
                try await AuditLogStore.lockForAppend(on: connection)
                let head = try await AuditLogStore.head(on: connection)
                let seq = (head?.seq ?? 0) + 1
                let previous = head?.hash ?? [UInt8](repeating: 0, count: 32)
                let hash = Self.entryHash(
                    previous: previous, seq: seq, milliseconds: milliseconds, tenant: tenant, actor: actor,
                    action: action, target: target, details: detailsText
                )
                let mac = try await pool.hmacSHA256(key: macKey, data: Self.macMessage(seq: seq, hash: hash))
                try await AuditLogStore.insert(AuditEntryRecord(
                    seq: seq, at: Date(timeIntervalSince1970: Double(milliseconds) / 1000), tenant: tenant, actor: actor,
                    action: action, target: target, details: detailsText, previousHash: previous, entryHash: hash, mac: mac,
                    macKeyVersion: macVersion
                ), on: connection)
                let anchorMAC = try await pool.hmacSHA256(key: macKey, data: Self.anchorMessage(seq: seq, hash: hash))
                return (seq, hash, anchorMAC)
            }
            try writeAnchor(seq: seq, hash: hash, mac: anchorMAC)
            return seq
        }
    }

    /// The outcome of ``verify()``.
    public struct Verification: Sendable, Codable, Equatable {
        public let entriesChecked: Int64
        /// The first entry that fails (sequence number and why), if any.
        public let firstBroken: Int64?
        public let problem: String?
        /// The newest head recorded outside PostgreSQL, if an anchor file is configured.
        public let anchoredSeq: Int64?
        public var isIntact: Bool { firstBroken == nil && problem == nil }
    }

    /// Walks the whole chain: sequence numbers contiguous from 1, each hash recomputed from the
    /// entry and its predecessor, each MAC recomputed in the HSM; then compares the head with the
    /// anchor. Reports the first broken entry.
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
                        return Verification(entriesChecked: checked, firstBroken: problem.seq, problem: problem.reason, anchoredSeq: nil)
                    }
                    previous = entry.entryHash
                    expectedSeq += 1
                    checked += 1
                }
            } while entries.count == 500
            let headSeq = expectedSeq - 1
            guard anchorPath != nil else {
                return Verification(entriesChecked: checked, firstBroken: nil, problem: nil, anchoredSeq: nil)
            }
            guard let anchor = try readAnchor() else {
                return Verification(
                    entriesChecked: checked, firstBroken: nil,
                    problem: headSeq > 0 ? "the anchor file is missing or empty while the log has \(headSeq) entries" : nil,
                    anchoredSeq: nil
                )
            }
            let expectedMAC = try await pool.hmacSHA256(key: rootKeys.mac, data: Self.anchorMessage(seq: anchor.seq, hash: anchor.hash))
            guard constantTimeEqual(expectedMAC, anchor.mac) else {
                return Verification(entriesChecked: checked, firstBroken: nil, problem: "the anchor's own MAC is wrong", anchoredSeq: anchor.seq)
            }
            if anchor.seq > headSeq {
                return Verification(
                    entriesChecked: checked, firstBroken: headSeq + 1,
                    problem: "entries \(headSeq + 1)…\(anchor.seq) were deleted (the anchor recorded entry \(anchor.seq))",
                    anchoredSeq: anchor.seq
                )
            }
            let anchored = try await database.withTransaction(context: "read anchored audit entry") { connection in
                try await AuditLogStore.entries(after: anchor.seq - 1, limit: 1, on: connection).first
            }
            if anchored?.entryHash != anchor.hash {
                return Verification(entriesChecked: checked, firstBroken: anchor.seq, problem: "entry \(anchor.seq) differs from the anchored head", anchoredSeq: anchor.seq)
            }
            return Verification(entriesChecked: checked, firstBroken: nil, problem: nil, anchoredSeq: anchor.seq)
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
        let mac = try await pool.hmacSHA256(key: RootKeys(macVersion: entry.macKeyVersion).mac, data: Self.macMessage(seq: entry.seq, hash: entry.entryHash))
        if !constantTimeEqual(mac, entry.mac) {
            return (entry.seq, "entry \(entry.seq) has a wrong MAC")
        }
        return nil
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

    private func writeAnchor(seq: Int64, hash: [UInt8], mac: [UInt8]) throws {
        guard let anchorPath else { return }
        let line = "\(seq) \(lowercaseHex(hash)) \(lowercaseHex(mac))\n"
        let descriptor = open(anchorPath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw CustodyError.storage(.configuration("cannot open audit anchor \(anchorPath)")) }
        defer { close(descriptor) }
        _ = line.withCString { write(descriptor, $0, strlen($0)) }
    }

    private func readAnchor() throws -> (seq: Int64, hash: [UInt8], mac: [UInt8])? {
        guard let anchorPath, let data = FileManager.default.contents(atPath: anchorPath) else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        guard let last = lines.last else { return nil }
        let fields = last.split(separator: " ")
        guard fields.count == 3, let seq = Int64(fields[0]), let hash = unhex(fields[1]), let mac = unhex(fields[2]) else {
            return (0, [], [])
        }
        return (seq, hash, mac)
    }
}

func unhex(_ text: Substring) -> [UInt8]? {
    let characters = Array(text.utf8)
    guard characters.count % 2 == 0 else { return nil }
    var bytes = [UInt8]()
    bytes.reserveCapacity(characters.count / 2)
    var index = 0
    while index < characters.count {
        guard let byte = UInt8(String(decoding: characters[index ..< index + 2], as: UTF8.self), radix: 16) else { return nil }
        bytes.append(byte)
        index += 2
    }
    return bytes
}

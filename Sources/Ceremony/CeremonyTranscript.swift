import Foundation
public import HSM
import SecureMemory

/// A ceremony transcript: JSON lines, hash-chained, each line MAC'd in the HSM by the root MAC
/// key (DESIGN §11). Lines are only ever appended; the file is created with `O_EXCL`, mode 0600.
public struct CeremonyTranscript: Sendable {
    public let path: String

    public init(path: String) { self.path = path }

    /// What a step records; the transcript adds sequence, time, chain and MAC.
    public struct Draft: Sendable {
        public var step: String
        public var ceremonyID: String?
        public var operatorName: String
        public var witnesses: [String]
        public var tokenLabel: String
        public var tokenSerial: String
        public var keys: [CeremonyTranscriptEntry.Key] = []
        public var threshold: Int?
        public var shareCount: Int?
        public var shares: [CeremonyTranscriptEntry.Share] = []
        public var details: [String: String] = [:]
        public var configHash: String

        public init(step: String, operatorName: String, witnesses: [String], tokenLabel: String, tokenSerial: String, configHash: String) {
            self.step = step
            self.operatorName = operatorName
            self.witnesses = witnesses
            self.tokenLabel = tokenLabel
            self.tokenSerial = tokenSerial
            self.configHash = configHash
        }
    }

    /// The outcome of ``verify(pool:)``.
    public struct Verification: Sendable, Codable, Equatable {
        public let path: String
        public let entries: Int
        /// The first line (1-based) that fails, and why.
        public let firstBadLine: Int?
        public let problem: String?
        /// The line the token anchored for this transcript; `nil` when this token holds no
        /// anchor for it (a token restored from shares, before its first MAC'd line).
        public var anchoredLine: Int? = nil
        public var isIntact: Bool { firstBadLine == nil && problem == nil }
    }

    static let zeroHash = String(repeating: "0", count: 64)

    /// Appends one entry: reads and checks the chain so far (a broken transcript is never
    /// extended), then writes the new line. Creates the file if it does not exist.
    /// - Parameters:
    ///   - macKey: the root MAC key's label, or `nil` before it exists (only `init-token`).
    /// - Throws: ``CeremonyError``.
    @discardableResult
    public func append(_ draft: Draft, macKey: String?, pool: SessionPool?) async throws -> CeremonyTranscriptEntry {
        try await ceremony {
            var entries = [CeremonyTranscriptEntry]()
            let exists = PrivateFile.exists(path)
            if exists {
                entries = try self.entries()
                // The chain always; the MACs too when the HSM is at hand (not before init-token).
                let check = try await Self.check(entries, path: path, pool: pool, requireFinalMAC: false)
                if let line = check.firstBadLine { throw CeremonyError.transcriptBroken(path: path, line: line, reason: check.problem ?? "") }
                // Never extend a transcript cut short: the next line would hide the cut.
                if let pool, let first = entries.first.flatMap({ Hex.decode($0.entryHash) }) {
                    let anchored = try await Self.anchorCheck(entries, path: path, anchor: CeremonyTranscriptAnchor(pool: pool, firstEntryHash: first))
                    if let line = anchored.firstBadLine { throw CeremonyError.transcriptBroken(path: path, line: line, reason: anchored.problem ?? "") }
                }
            }
            let previous = entries.last
            let time = ISO8601DateFormatter().string(from: Date())
            let unsigned = CeremonyTranscriptEntry(
                seq: (previous?.seq ?? 0) + 1, time: time, step: draft.step, ceremonyID: draft.ceremonyID,
                operatorName: draft.operatorName, witnesses: draft.witnesses, tokenLabel: draft.tokenLabel,
                tokenSerial: draft.tokenSerial, keys: draft.keys, threshold: draft.threshold, shareCount: draft.shareCount,
                shares: draft.shares, details: draft.details, toolVersion: KeyCeremony.toolVersion,
                configHash: draft.configHash, previousHash: previous?.entryHash ?? Self.zeroHash, entryHash: "",
                macKey: macKey, mac: nil
            )
            let hash = unsigned.computedHash()
            var mac: String?
            if let macKey {
                guard let pool else { throw CeremonyError.invalidArgument("a MAC'd transcript entry needs the HSM") }
                mac = Hex.encode(try await pool.hmacSHA256(key: .tokenObject(label: macKey), data: CeremonyTranscriptEntry.macMessage(entryHash: hash)))
            }
            let entry = CeremonyTranscriptEntry(
                seq: unsigned.seq, time: time, step: draft.step, ceremonyID: draft.ceremonyID, operatorName: draft.operatorName,
                witnesses: draft.witnesses, tokenLabel: draft.tokenLabel, tokenSerial: draft.tokenSerial, keys: draft.keys,
                threshold: draft.threshold, shareCount: draft.shareCount, shares: draft.shares, details: draft.details,
                toolVersion: KeyCeremony.toolVersion, configHash: draft.configHash, previousHash: unsigned.previousHash,
                entryHash: Hex.encode(hash), macKey: macKey, mac: mac
            )
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let line = Array(try encoder.encode(entry)) + [0x0A]
            if exists {
                try PrivateFile.append(path, contents: line)
            } else {
                try PrivateFile.create(path, contents: line)
            }
            // After the line is on disk: an anchor ahead of the file would be a false alarm.
            if let macKey, let pool, let first = Hex.decode(entries.first?.entryHash ?? entry.entryHash) {
                try await CeremonyTranscriptAnchor(pool: pool, firstEntryHash: first).write(line: entry.seq, entryHash: hash, macKey: macKey)
            }
            return entry
        }
    }

    /// Recomputes the chain and every MAC (in the HSM holding the root MAC key); reports the
    /// first bad line. A transcript must end with a MAC'd entry: unMAC'd lines (`init-token`,
    /// written before the token has a MAC key) are covered by the MAC'd lines after them, whose
    /// hashes chain over them.
    /// - Throws: ``CeremonyError`` when the file cannot be read or the HSM fails — not for a
    ///   broken transcript, which is the answer.
    public func verify(pool: SessionPool) async throws -> Verification {
        try await ceremony {
            var entries = [CeremonyTranscriptEntry]()
            for (index, parsed) in try Self.parse(path: path).enumerated() {
                switch parsed {
                case .success(let entry): entries.append(entry)
                case .failure(let error):
                    return Verification(path: path, entries: index, firstBadLine: index + 1, problem: "not a transcript entry (\(error.reason))")
                }
            }
            let chain = try await Self.check(entries, path: path, pool: pool, requireFinalMAC: true)
            guard chain.isIntact, let first = entries.first.flatMap({ Hex.decode($0.entryHash) }) else { return chain }
            return try await Self.anchorCheck(entries, path: path, anchor: CeremonyTranscriptAnchor(pool: pool, firstEntryHash: first))
        }
    }

    /// Compares an intact chain with the token's anchor for it (lines cut from the end).
    static func anchorCheck(_ entries: [CeremonyTranscriptEntry], path: String, anchor: CeremonyTranscriptAnchor) async throws -> Verification {
        switch try await anchor.read() {
        case .missing:
            return Verification(path: path, entries: entries.count, firstBadLine: nil, problem: nil)
        case .invalid:
            return Verification(path: path, entries: entries.count, firstBadLine: nil, problem: "the token's anchor for this transcript fails its MAC")
        case .anchor(let value):
            if let found = CeremonyTranscriptAnchor.problem(value, entries: entries) {
                return Verification(path: path, entries: entries.count, firstBadLine: found.line, problem: found.reason, anchoredLine: value.line)
            }
            return Verification(path: path, entries: entries.count, firstBadLine: nil, problem: nil, anchoredLine: value.line)
        }
    }

    /// Every entry, without checking anything (for `verify` to find the recorded KCVs).
    public func entries() throws -> [CeremonyTranscriptEntry] {
        do {
            return try Self.parse(path: path).map { try $0.get() }
        } catch let error as LineError {
            throw CeremonyError.transcriptUnreadable(path: path, reason: error.reason)
        }
    }

    struct LineError: Error { let reason: String }

    static func parse(path: String) throws -> [Result<CeremonyTranscriptEntry, LineError>] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CeremonyError.transcriptUnreadable(path: path, reason: "cannot open it")
        }
        let decoder = JSONDecoder()
        return data.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated().compactMap { index, line in
            if line.isEmpty { return nil }
            do {
                return .success(try decoder.decode(CeremonyTranscriptEntry.self, from: Data(line)))
            } catch {
                return .failure(LineError(reason: "line \(index + 1) is not valid JSON for an entry"))
            }
        }
    }

    static func check(_ entries: [CeremonyTranscriptEntry], path: String, pool: SessionPool?, requireFinalMAC: Bool) async throws -> Verification {
        var previous = zeroHash
        for (index, entry) in entries.enumerated() {
            let line = index + 1
            func broken(_ reason: String) -> Verification {
                Verification(path: path, entries: entries.count, firstBadLine: line, problem: reason)
            }
            if entry.seq != line { return broken("sequence number \(entry.seq), expected \(line): a line was removed, added or moved") }
            if entry.previousHash != previous { return broken("does not link to line \(line - 1)") }
            let hash = Hex.encode(entry.computedHash())
            if hash != entry.entryHash { return broken("its content does not match its hash: the line was changed") }
            if let macKey = entry.macKey, let mac = entry.mac, let macBytes = Hex.decode(mac) {
                guard macKey.hasPrefix("custos/root/mac/v") else { return broken("MAC key \(macKey) is not a root MAC key") }
                guard let pool else { previous = entry.entryHash; continue }
                let expected = try await pool.hmacSHA256(
                    key: .tokenObject(label: macKey), data: CeremonyTranscriptEntry.macMessage(entryHash: entry.computedHash())
                )
                if !constantTimeEqual(expected, macBytes) { return broken("wrong MAC (not written with \(macKey) of this token)") }
            } else if entry.macKey != nil || entry.mac != nil {
                return broken("incomplete MAC fields")
            }
            previous = entry.entryHash
        }
        if entries.isEmpty && requireFinalMAC {
            return Verification(path: path, entries: 0, firstBadLine: nil, problem: "the transcript is empty")
        }
        if requireFinalMAC, let last = entries.last, last.mac == nil {
            return Verification(path: path, entries: entries.count, firstBadLine: entries.count, problem: "the last line carries no MAC, so nothing authenticates the transcript")
        }
        return Verification(path: path, entries: entries.count, firstBadLine: nil, problem: nil)
    }
}

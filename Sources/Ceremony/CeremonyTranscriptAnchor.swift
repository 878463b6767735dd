import Crypto
import HSM
import SecureMemory

/// The newest MAC'd line of a transcript, kept on the token that wrote it: a private data object
/// (`CKO_DATA`, label `custos/ceremony/anchor`, `CKA_APPLICATION` derived from the transcript's
/// first line), holding the line number, its hash and a MAC by the root MAC key that signed the
/// line. SoftHSM keeps a data object's value read-only, so a write creates the new object and
/// then destroys the old; a reader takes the MAC-valid one with the highest line.
///
/// The hash chain finds any changed, removed or reordered line but not lines cut from the end;
/// this anchor does: ``CeremonyTranscript/verify(pool:)`` compares, and
/// ``CeremonyTranscript/append(_:macKey:pool:)`` refuses to extend a transcript that stands
/// behind it. A token restored from shares has no anchor for older transcripts (data objects
/// are not in the shares) until its first MAC'd line.
struct CeremonyTranscriptAnchor: Sendable {
    static let label = "custos/ceremony/anchor"
    static let format: UInt8 = 1

    struct Value: Equatable {
        let line: Int
        let entryHash: [UInt8]
        let macKey: String
        let mac: [UInt8]

        var bytes: [UInt8] {
            var bytes = [CeremonyTranscriptAnchor.format]
            withUnsafeBytes(of: UInt64(line).bigEndian) { bytes.append(contentsOf: $0) }
            let label = Array(macKey.utf8)
            return bytes + entryHash + [UInt8(label.count)] + label + mac
        }

        init(line: Int, entryHash: [UInt8], macKey: String, mac: [UInt8]) {
            self.line = line
            self.entryHash = entryHash
            self.macKey = macKey
            self.mac = mac
        }

        init?(bytes: [UInt8]) {
            guard bytes.count > 42, bytes[0] == CeremonyTranscriptAnchor.format else { return nil }
            var line: UInt64 = 0
            for byte in bytes[1 ..< 9] { line = line << 8 | UInt64(byte) }
            let labelLength = Int(bytes[41])
            guard bytes.count == 42 + labelLength + 32, line >= 1, line <= UInt64(Int.max) else { return nil }
            self.init(
                line: Int(line), entryHash: Array(bytes[9 ..< 41]),
                macKey: String(decoding: bytes[42 ..< 42 + labelLength], as: UTF8.self), mac: Array(bytes[(42 + labelLength)...])
            )
        }

        static func message(line: Int, entryHash: [UInt8]) -> [UInt8] {
            var encoding = LengthPrefixed(domain: "custos/ceremony/anchor/v1")
            encoding.append(String(line))
            encoding.append(Hex.encode(entryHash))
            return encoding.bytes
        }
    }

    enum Reading: Equatable {
        case missing
        /// An object is there but is not a MAC-valid anchor.
        case invalid
        case anchor(Value)
    }

    let pool: SessionPool
    /// `CKA_APPLICATION`: `custos/ceremony:` and 16 bytes of SHA-256 of the transcript's first
    /// line hash, in hex.
    let object: TokenDataObject

    /// - Parameter firstEntryHash: the transcript's identity (its first line's hash).
    init(pool: SessionPool, firstEntryHash: [UInt8]) {
        self.pool = pool
        var identity = Array("custos/ceremony/anchor\0".utf8)
        identity += firstEntryHash
        object = TokenDataObject(label: Self.label, application: "custos/ceremony:" + Hex.encode(SHA256.hash(data: identity).prefix(16)))
    }

    func read() async throws -> Reading {
        let object = object
        return try await pool.withSession { session in
            let pkcs11 = session.pkcs11
            let stored = try object.values(in: pkcs11)
            if stored.isEmpty { return .missing }
            var newest: Value?
            for bytes in stored {
                guard let value = Value(bytes: bytes), value.macKey.hasPrefix("custos/root/mac/v") else {
                    continue
                }
                let expected = try pkcs11.sign(
                    .sha256HMAC, key: try session.handle(for: .tokenObject(label: value.macKey)),
                    data: Value.message(line: value.line, entryHash: value.entryHash)
                )
                if constantTimeEqual(expected, value.mac), value.line > newest?.line ?? 0 { newest = value }
            }
            return newest.map(Reading.anchor) ?? .invalid
        }
    }

    /// Records `line` as the transcript's newest.
    func write(line: Int, entryHash: [UInt8], macKey: String) async throws {
        let object = object
        try await pool.withSession { session in
            let pkcs11 = session.pkcs11
            let mac = try pkcs11.sign(
                .sha256HMAC, key: try session.handle(for: .tokenObject(label: macKey)), data: Value.message(line: line, entryHash: entryHash)
            )
            let value = Value(line: line, entryHash: entryHash, macKey: macKey, mac: mac)
            try object.replace(with: value.bytes, in: pkcs11)
        }
    }

    /// Where `entries` stand relative to the anchor: `nil` when they reach it, else the first
    /// bad line and why.
    static func problem(_ anchor: Value, entries: [CeremonyTranscriptEntry]) -> (line: Int, reason: String)? {
        if anchor.line > entries.count {
            let removed = anchor.line == entries.count + 1 ? "line \(anchor.line) was" : "lines \(entries.count + 1)…\(anchor.line) were"
            return (entries.count + 1, "\(removed) removed from the end (the token anchored line \(anchor.line))")
        }
        if Hex.decode(entries[anchor.line - 1].entryHash) != anchor.entryHash {
            return (anchor.line, "line \(anchor.line) is not the line the token anchored")
        }
        return nil
    }
}

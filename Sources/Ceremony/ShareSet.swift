public import SecureMemory

/// Share files put together: checked as a set, combined, and the result checked against what
/// the split recorded. It either yields the exact secret of the ceremony or throws — never a
/// wrong key.
public struct ShareSet: Sendable {
    public let files: [(path: String, file: ShareFile)]

    /// Reads every file; each is checked on its own (format, share check value).
    /// - Throws: ``CeremonyError``.
    public init(paths: [String]) throws {
        files = try paths.map { path in (path, try ShareFile.read(from: path)) }
    }

    public init(files: [(path: String, file: ShareFile)]) {
        self.files = files
    }

    /// The header the set agrees on.
    public var header: ShareFile.Header? { files.first?.file.header }

    /// Checks the set (one ceremony, one split, distinct indices, at least M), combines it, and
    /// checks the secret against the recorded secret check value and each key's KCV.
    /// - Throws: ``CeremonyError/notEnoughShares(have:need:)``,
    ///   ``CeremonyError/mixedCeremonies(first:other:path:)``,
    ///   ``CeremonyError/inconsistentShareFile(path:field:)``,
    ///   ``CeremonyError/duplicateShareIndex(_:path:)``, ``CeremonyError/secretCheckFailed(ceremony:)``,
    ///   ``CeremonyError/checkValueMismatch(label:expected:actual:stage:)``.
    public func combine() throws(CeremonyError) -> SecretBytes {
        guard let first = files.first?.file.header else { throw .notEnoughShares(have: 0, need: 2) }
        var indices = Set<UInt8>()
        for (path, file) in files {
            let header = file.header
            guard header.ceremonyID == first.ceremonyID else {
                throw .mixedCeremonies(first: first.ceremonyID, other: header.ceremonyID, path: path)
            }
            if header.threshold != first.threshold { throw .inconsistentShareFile(path: path, field: "threshold") }
            if header.shares != first.shares { throw .inconsistentShareFile(path: path, field: "number of shares") }
            if header.keys != first.keys { throw .inconsistentShareFile(path: path, field: "keys and check values") }
            if header.secretCheckValue != first.secretCheckValue { throw .inconsistentShareFile(path: path, field: "secret check value") }
            if header.token != first.token { throw .inconsistentShareFile(path: path, field: "token") }
            guard indices.insert(file.share.index).inserted else { throw .duplicateShareIndex(file.share.index, path: path) }
        }
        guard files.count >= first.threshold else { throw .notEnoughShares(have: files.count, need: first.threshold) }
        let secret: SecretBytes
        do {
            secret = try Shamir.combine(files.map(\.file.share))
        } catch {
            throw .shamir(error)
        }
        let recorded = first.secretCheckValue.lowercased()
        guard constantTimeEqual(Array(ShareFile.secretCheckValue(ceremonyID: first.ceremonyID, secret: secret).utf8), Array(recorded.utf8)) else {
            throw .secretCheckFailed(ceremony: first.ceremonyID)
        }
        for key in first.keys {
            // No sum of the two: a forged header's offset near Int.max overflowed it (a trap,
            // where a clear refusal is due).
            guard key.offset >= 0, key.length > 0, key.offset <= secret.count, key.length <= secret.count - key.offset,
                  key.isEscrowKey || key.pkcs11KeyType != nil else {
                throw .inconsistentShareFile(path: files[0].path, field: "key \(key.label) layout")
            }
            let actual: String
            if let keyType = key.pkcs11KeyType {
                actual = Hex.encode(try KeyCheckValue.compute(Self.slice(secret, key), keyType: keyType))
            } else {
                actual = Hex.encode(try KeyCeremony.escrowCheckValue(Self.slice(secret, key)))
            }
            guard actual == key.checkValue.lowercased() else {
                throw .checkValueMismatch(label: key.label, expected: key.checkValue, actual: actual, stage: "computed from the combined shares")
            }
        }
        return secret
    }

    /// Bytes of one key out of the combined secret, in protected memory.
    static func slice(_ secret: SecretBytes, _ key: ShareFile.Key) -> SecretBytes {
        secret.withUnsafeBytes { bytes in
            SecretBytes(bytes[key.offset ..< key.offset + key.length])
        }
    }
}

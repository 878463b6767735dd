public import CustosModel

/// A template as read from `templates`: its key version and token bytes, not yet a token. The
/// length does not name the format (compact and quaternary tokens are both 1,024 bytes); the
/// version's format does, recorded under the row MAC of its `key_versions` rows, which the
/// reader has from the keyring (a probe of the same version carries it).
public struct StoredTemplate: Sendable, Hashable {
    public let keyVersion: Int
    public let bytes: [UInt8]
    /// The row's MAC (migration 33), `nil` for a row written before it, or when the read did
    /// not ask for it (the 1:N gallery: identification checks its candidates' re-read rows).
    public let seal: RecordSeal?

    public init(keyVersion: Int, bytes: [UInt8], seal: RecordSeal? = nil) {
        self.keyVersion = keyVersion
        self.bytes = bytes
        self.seal = seal
    }

    /// The token, read in `format` (its key version's).
    /// - Throws: ``TemplateFormatError/formatMismatch(keyVersion:expected:byteCount:)`` when
    ///   the stored length is not `format`'s.
    public func token(format: BiometricTokenFormat) throws(TemplateFormatError) -> BiometricToken {
        guard let token = BiometricToken(keyVersion: keyVersion, format: format, bytes: bytes) else {
            throw .formatMismatch(keyVersion: keyVersion, expected: format, byteCount: bytes.count)
        }
        return token
    }
}

extension BiometricToken {
    /// The token as it is stored.
    public var stored: StoredTemplate { StoredTemplate(keyVersion: keyVersion, bytes: bytes) }
}

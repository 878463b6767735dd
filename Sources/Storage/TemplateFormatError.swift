public import CustosModel

/// A stored template that does not fit its key version: never the caller's mistake (templates are
/// written only by the service, from tokens of the version's own format), so a database that was
/// edited or restored wrongly. Refused with its context rather than compared — a template read
/// under the wrong format would score as an impostor, or worse, silently — and answered as an
/// internal error (the incident is logged).
public enum TemplateFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stored token has a length no format has (the schema allows 1,024 and 4,096 bytes).
    case unreadableLength(keyVersion: Int, byteCount: Int)
    /// The stored token's format is not the one its key version records.
    case formatMismatch(keyVersion: Int, expected: BiometricTokenFormat, stored: BiometricTokenFormat)

    public var description: String {
        switch self {
        case .unreadableLength(let version, let count):
            "a biometric template of key version \(version) has \(count) bytes, which is neither format (1,024 compact or 4,096 wide bytes)"
        case .formatMismatch(let version, let expected, let stored):
            "a biometric template of key version \(version) is stored in the \(stored) format, but that version makes \(expected) tokens"
        }
    }
}

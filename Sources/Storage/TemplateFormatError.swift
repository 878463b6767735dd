public import CustosModel

/// A stored template that does not fit its key version: never the caller's mistake (templates are
/// written only by the service, from tokens of the version's own format), so a database that was
/// edited or restored wrongly. Refused with its context rather than compared — a template read
/// under the wrong format would score as an impostor, or worse, silently — and answered as an
/// internal error (the incident is logged).
public enum TemplateFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stored token's length is not that of the format its key version records (the schema
    /// allows 1,024 and 4,096 bytes, the lengths of every format).
    case formatMismatch(keyVersion: Int, expected: BiometricTokenFormat, byteCount: Int)

    public var description: String {
        switch self {
        case .formatMismatch(let version, let expected, let count):
            "a biometric template of key version \(version) has \(count) bytes, but that version makes \(expected) tokens of \(expected.byteCount) bytes"
        }
    }
}

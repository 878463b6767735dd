import Crypto
public import SecureMemory

/// Checks Standard Webhooks 1.0 signatures (DESIGN §8): `v1` (HMAC-SHA256) against symmetric
/// secrets, `v1a` (Ed25519) against public keys.
///
/// A message verifies if any signature entry matches any secret or public key, so a
/// receiver keeps working while the sender signs with both the retiring and the new key.
public struct WebhookVerifier: Sendable {
    private let secrets: [SecretBytes]
    private let publicKeys: [Curve25519.Signing.PublicKey]
    private let toleranceSeconds: Int64

    /// - Parameters:
    ///   - secrets: the decoded symmetric secrets (see ``StandardWebhooks/decodeSecret(_:)``).
    ///   - publicKeys: raw 32-byte Ed25519 public keys (see
    ///     ``StandardWebhooks/decodePublicKey(_:)``); a value that is not a valid key never
    ///     matches.
    ///   - tolerance: how far the timestamp may be from now, either way; whole seconds.
    public init(secrets: [SecretBytes] = [], publicKeys: [[UInt8]] = [], tolerance: Duration = .seconds(300)) {
        precondition(tolerance >= .zero, "negative webhook timestamp tolerance")
        self.secrets = secrets
        self.publicKeys = publicKeys.compactMap { try? Curve25519.Signing.PublicKey(rawRepresentation: $0) }
        self.toleranceSeconds = tolerance.components.seconds
    }

    /// Verifies one delivery.
    ///
    /// - Parameters:
    ///   - id: the `webhook-id` header.
    ///   - timestamp: the `webhook-timestamp` header, unix seconds in decimal.
    ///   - signatureHeader: the `webhook-signature` header.
    ///   - body: the raw body bytes, exactly as received.
    ///   - now: the current unix time in seconds.
    /// - Throws: ``WebhookVerificationError/missingID``,
    ///   ``WebhookVerificationError/malformedTimestamp``,
    ///   ``WebhookVerificationError/timestampTooOld``,
    ///   ``WebhookVerificationError/timestampTooNew``,
    ///   ``WebhookVerificationError/malformedSignatureHeader`` (no parseable entry) or
    ///   ``WebhookVerificationError/noMatchingSignature``.
    public func verify(id: String, timestamp: String, signatureHeader: String, body: [UInt8], now: Int64) throws(WebhookVerificationError) {
        guard !id.isEmpty else { throw .missingID }
        guard !timestamp.isEmpty, timestamp.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let seconds = Int64(timestamp)
        else { throw .malformedTimestamp }
        let (earliest, earliestOverflow) = now.subtractingReportingOverflow(toleranceSeconds)
        let (latest, latestOverflow) = now.addingReportingOverflow(toleranceSeconds)
        if !earliestOverflow, seconds < earliest { throw .timestampTooOld }
        if !latestOverflow, seconds > latest { throw .timestampTooNew }

        let entries = StandardWebhooks.parseSignatureHeader(signatureHeader)
        guard !entries.isEmpty else { throw .malformedSignatureHeader }

        let content = StandardWebhooks.signedContent(id: id, timestamp: seconds, body: body)
        for entry in entries {
            switch entry.version {
            case StandardWebhooks.hmacVersion:
                guard entry.signature.count == SHA256.byteCount else { continue }
                for secret in secrets where Self.hmacMatches(entry.signature, content: content, secret: secret) {
                    return
                }
            case StandardWebhooks.ed25519Version:
                for key in publicKeys where key.isValidSignature(entry.signature, for: content) {
                    return
                }
            default:
                continue
            }
        }
        throw .noMatchingSignature
    }

    /// Compares in constant time (swift-crypto's `isValidAuthenticationCode`).
    private static func hmacMatches(_ signature: [UInt8], content: [UInt8], secret: SecretBytes) -> Bool {
        let key = secret.withUnsafeBytes { SymmetricKey(data: $0) }
        return HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: content, using: key)
    }
}

/// Why a webhook delivery or a webhook key was refused. Descriptions never contain secrets,
/// signatures or message contents.
public enum WebhookVerificationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `webhook-id` header is empty.
    case missingID
    /// The `webhook-timestamp` header is not a decimal number of seconds.
    case malformedTimestamp
    /// The timestamp is further in the past than the tolerance.
    case timestampTooOld
    /// The timestamp is further in the future than the tolerance.
    case timestampTooNew
    /// The `webhook-signature` header has no parseable entry.
    case malformedSignatureHeader
    /// No entry matches any configured secret or public key.
    case noMatchingSignature
    /// A `whsec_` secret is not strict base64 of 24–64 bytes.
    case malformedSecret
    /// A `whpk_` public key is not strict base64 of 32 bytes.
    case malformedPublicKey

    public var description: String {
        switch self {
        case .missingID: "webhook-id is missing"
        case .malformedTimestamp: "webhook-timestamp is not unix seconds"
        case .timestampTooOld: "webhook-timestamp is too old"
        case .timestampTooNew: "webhook-timestamp is too far in the future"
        case .malformedSignatureHeader: "webhook-signature has no valid entry"
        case .noMatchingSignature: "no webhook signature matches"
        case .malformedSecret: "malformed webhook secret"
        case .malformedPublicKey: "malformed webhook public key"
        }
    }
}

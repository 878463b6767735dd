public import SecureMemory

/// The wire format of Standard Webhooks 1.0 (DESIGN §8).
///
/// Signed content is `{id}.{timestamp}.{body}` over the raw body bytes. The
/// `webhook-signature` header holds space-separated entries `v1,<base64 HMAC-SHA256>` or
/// `v1a,<base64 Ed25519 signature>`. Secrets are shown to the tenant as `whsec_<base64>`,
/// Ed25519 public keys as `whpk_<base64>`.
public enum StandardWebhooks {
    /// The header carrying the message id.
    public static let idHeader = "webhook-id"
    /// The header carrying the unix time in seconds, in decimal.
    public static let timestampHeader = "webhook-timestamp"
    /// The header carrying the signatures.
    public static let signatureHeaderName = "webhook-signature"
    /// The version tag of HMAC-SHA256 signatures.
    public static let hmacVersion = "v1"
    /// The version tag of Ed25519 signatures.
    public static let ed25519Version = "v1a"
    /// The text before the base64 of a symmetric secret.
    public static let secretPrefix = "whsec_"
    /// The text before the base64 of an Ed25519 public key.
    public static let publicKeyPrefix = "whpk_"
    /// The accepted sizes of a decoded symmetric secret. The spec's own test vector uses 24
    /// bytes; Custos issues 32–64.
    public static let secretByteCounts = 24...64

    /// The bytes that are signed: `{id}.{timestamp}.{body}`.
    public static func signedContent(id: String, timestamp: Int64, body: [UInt8]) -> [UInt8] {
        var content = Array(id.utf8)
        content.reserveCapacity(content.count + 22 + body.count)
        content.append(UInt8(ascii: "."))
        content.append(contentsOf: String(timestamp).utf8)
        content.append(UInt8(ascii: "."))
        content.append(contentsOf: body)
        return content
    }

    /// The `webhook-signature` header value: `version,base64` entries separated by spaces.
    public static func signatureHeader(_ entries: [(version: String, signature: [UInt8])]) -> String {
        entries.map { "\($0.version),\(base64Encode($0.signature))" }.joined(separator: " ")
    }

    /// The entries of a `webhook-signature` header. Entries without a version, without a
    /// comma, or whose signature is empty or not strict base64 are skipped.
    public static func parseSignatureHeader(_ header: String) -> [(version: String, signature: [UInt8])] {
        header.split(separator: " ", omittingEmptySubsequences: true).compactMap { entry in
            guard let comma = entry.firstIndex(of: ",") else { return nil }
            let version = entry[..<comma]
            guard !version.isEmpty, let signature = base64Decode(entry[entry.index(after: comma)...]),
                  !signature.isEmpty
            else { return nil }
            return (String(version), signature)
        }
    }

    /// The text shown to the tenant once: `whsec_` + base64 of `secret`, as UTF-8 bytes.
    public static func encodeSecret(_ secret: SecretBytes) -> SecretBytes {
        let prefix = Array(secretPrefix.utf8)
        return secret.withUnsafeBytes { bytes in
            SecretBytes(count: prefix.count + base64EncodedLength(bytes.count)) { output in
                output.copyBytes(from: prefix)
                base64Encode(bytes, into: UnsafeMutableRawBufferPointer(rebasing: output[prefix.count...]))
            }
        }
    }

    /// Reads a symmetric secret, with or without the `whsec_` prefix.
    ///
    /// - Throws: ``WebhookVerificationError/malformedSecret`` if the text is not strict
    ///   base64 or does not decode to 24–64 bytes.
    public static func decodeSecret(_ text: String) throws(WebhookVerificationError) -> SecretBytes {
        // Read the caller's string in place: no further unprotected copy of the secret.
        var text = text
        guard let secret = text.withUTF8({ decodeSecret(UnsafeRawBufferPointer($0)) }) else { throw .malformedSecret }
        return secret
    }

    /// Reads a symmetric secret held in protected memory (a secret file's bytes, a trailing
    /// line break ignored), with no unprotected copy on the way.
    public static func decodeSecret(_ text: SecretBytes) throws(WebhookVerificationError) -> SecretBytes {
        let secret = text.withUnsafeBytes { bytes -> SecretBytes? in
            var end = bytes.count
            while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D { end -= 1 }
            return decodeSecret(UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
        }
        guard let secret else { throw .malformedSecret }
        return secret
    }

    private static func decodeSecret(_ text: UnsafeRawBufferPointer) -> SecretBytes? {
        var input = text
        if input.starts(with: secretPrefix.utf8) {
            input = UnsafeRawBufferPointer(rebasing: input[secretPrefix.utf8.count...])
        }
        guard let count = base64DecodedLength(input), secretByteCounts.contains(count) else { return nil }
        var valid = false
        let secret = SecretBytes(count: count) { valid = base64Decode(input, into: $0) }
        return valid ? secret : nil
    }

    /// The published form of an Ed25519 public key: `whpk_` + base64 of its 32 bytes.
    public static func encodePublicKey(_ key: [UInt8]) -> String {
        publicKeyPrefix + base64Encode(key)
    }

    /// Reads an Ed25519 public key, with or without the `whpk_` prefix.
    ///
    /// - Throws: ``WebhookVerificationError/malformedPublicKey`` if the text is not strict
    ///   base64 of exactly 32 bytes.
    public static func decodePublicKey(_ text: String) throws(WebhookVerificationError) -> [UInt8] {
        let encoded = text.hasPrefix(publicKeyPrefix) ? text.dropFirst(publicKeyPrefix.count) : text[...]
        guard let key = base64Decode(encoded), key.count == 32 else { throw .malformedPublicKey }
        return key
    }

    // MARK: Base64 (RFC 4648 §4: standard alphabet, with padding)

    private static let base64Alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let padding = UInt8(ascii: "=")

    /// Standard base64 with `=` padding.
    public static func base64Encode(_ bytes: some Collection<UInt8>) -> String {
        let input = Array(bytes)
        var output = [UInt8](repeating: 0, count: base64EncodedLength(input.count))
        input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { base64Encode(source, into: $0) }
        }
        return String(decoding: output, as: UTF8.self)
    }

    /// Strict standard base64: length a multiple of 4, padding only at the end, no
    /// whitespace, unused bits zero. Returns `nil` for anything else.
    public static func base64Decode(_ text: some StringProtocol) -> [UInt8]? {
        let input = Array(text.utf8)
        guard let count = base64DecodedLength(input) else { return nil }
        var output = [UInt8](repeating: 0, count: count)
        let valid = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { base64Decode(source, into: $0) }
        }
        return valid ? output : nil
    }

    static func base64EncodedLength(_ byteCount: Int) -> Int {
        (byteCount + 2) / 3 * 4
    }

    /// The decoded size of `input`, from its length and padding; `nil` if the length is not a
    /// multiple of 4. The characters themselves are checked by the decoder.
    static func base64DecodedLength(_ input: some Collection<UInt8>) -> Int? {
        guard input.count % 4 == 0 else { return nil }
        var paddingCount = 0
        for byte in input.suffix(2) where byte == padding { paddingCount += 1 }
        return input.count / 4 * 3 - paddingCount
    }

    /// Writes the base64 of `input` into `output`, which must be exactly
    /// ``base64EncodedLength(_:)`` bytes.
    static func base64Encode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        precondition(output.count == base64EncodedLength(input.count), "base64 output size")
        var position = 0
        var index = 0
        while index < input.count {
            let remaining = input.count - index
            let first = UInt32(input[index])
            let second = remaining > 1 ? UInt32(input[index + 1]) : 0
            let third = remaining > 2 ? UInt32(input[index + 2]) : 0
            let group = first << 16 | second << 8 | third
            output[position] = base64Alphabet[Int(group >> 18 & 0x3F)]
            output[position + 1] = base64Alphabet[Int(group >> 12 & 0x3F)]
            output[position + 2] = remaining > 1 ? base64Alphabet[Int(group >> 6 & 0x3F)] : padding
            output[position + 3] = remaining > 2 ? base64Alphabet[Int(group & 0x3F)] : padding
            position += 4
            index += 3
        }
    }

    /// Decodes `input` into `output`, which must be ``base64DecodedLength(_:)`` bytes.
    /// Returns `false` (and zeroes `output`) unless `input` is strict base64.
    static func base64Decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        guard let expected = base64DecodedLength(input), expected == output.count else { return false }
        var valid = true
        var position = 0
        var index = 0
        while index < input.count, valid {
            let isLast = index + 4 == input.count
            var group: UInt32 = 0
            var paddingCount = 0
            for offset in 0..<4 {
                let character = input[index + offset]
                if character == padding {
                    // Padding: only in the last group, only in its last two places, and only
                    // followed by more padding.
                    guard isLast, offset >= 2 else { valid = false; break }
                    paddingCount += 1
                    group <<= 6
                } else {
                    guard paddingCount == 0, let value = base64Value(of: character) else { valid = false; break }
                    group = group << 6 | value
                }
            }
            guard valid else { break }
            let bytes = 3 - paddingCount
            // Non-canonical encodings (unused bits set) are rejected.
            if paddingCount == 1, group & 0xFF != 0 { valid = false; break }
            if paddingCount == 2, group & 0xFFFF != 0 { valid = false; break }
            output[position] = UInt8(truncatingIfNeeded: group >> 16)
            if bytes > 1 { output[position + 1] = UInt8(truncatingIfNeeded: group >> 8) }
            if bytes > 2 { output[position + 2] = UInt8(truncatingIfNeeded: group) }
            position += bytes
            index += 4
        }
        if !valid {
            for offset in output.indices { output[offset] = 0 }
        }
        return valid
    }

    private static func base64Value(of character: UInt8) -> UInt32? {
        switch character {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): UInt32(character - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): UInt32(character - UInt8(ascii: "a")) + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(character - UInt8(ascii: "0")) + 52
        case UInt8(ascii: "+"): 62
        case UInt8(ascii: "/"): 63
        default: nil
        }
    }
}

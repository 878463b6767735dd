public import SecureMemory

/// The text form of an API key: `custos_<env>_<keyid>_<secret><checksum>` (DESIGN §7).
///
/// - `env`: 1–8 characters of `[a-z0-9]`, e.g. `live` or `test`.
/// - `keyid`: 8 random bytes as exactly 11 base62 characters; public, used for lookup and display.
/// - `secret`: 32 random bytes as exactly 43 base62 characters.
/// - `checksum`: the ``CRC32`` of all the text before it, as exactly 6 base62 characters.
///
/// The widths are fixed, so a typo, a truncated paste or a secret-scanner hit is recognised
/// here, without a database or HSM call. The checksum is not a MAC: the key is verified by
/// its HMAC in the HSM.
public enum APIKeyFormat {
    /// The text every key starts with.
    public static let prefix = "custos_"
    /// The number of random bytes in the key id.
    public static let keyIDByteCount = 8
    /// The number of random bytes in the secret part.
    public static let secretByteCount = 32
    /// Base62 characters of the key id.
    public static let keyIDWidth = 11
    /// Base62 characters of the secret part.
    public static let secretWidth = 43
    /// Base62 characters of the checksum.
    public static let checksumWidth = 6
    /// The longest environment name.
    public static let maximumEnvironmentLength = 8

    private static let prefixBytes = Array(prefix.utf8)
    private static let separator = UInt8(ascii: "_")

    /// The length of a key whose environment has `environmentLength` characters.
    static func keyLength(environmentLength: Int) -> Int {
        prefixBytes.count + environmentLength + 1 + keyIDWidth + 1 + secretWidth + checksumWidth
    }

    /// Builds the text of a key.
    ///
    /// - Parameters:
    ///   - environment: 1–8 characters of `[a-z0-9]`.
    ///   - keyID: exactly 8 bytes.
    ///   - secret: exactly 32 bytes, from the HSM's random number generator.
    /// - Returns: the whole key's UTF-8 text. It is shown to the tenant once.
    /// - Throws: ``APIKeyFormatError/malformed(_:)`` with `.invalidEnvironment`,
    ///   `.wrongKeyIDLength` or `.wrongSecretLength`.
    public static func make(environment: String, keyID: [UInt8], secret: SecretBytes) throws(APIKeyFormatError) -> SecretBytes {
        let environmentBytes = Array(environment.utf8)
        guard isValidEnvironment(environmentBytes) else { throw .malformed(.invalidEnvironment) }
        guard keyID.count == keyIDByteCount else { throw .malformed(.wrongKeyIDLength) }
        guard secret.count == secretByteCount else { throw .malformed(.wrongSecretLength) }

        let length = keyLength(environmentLength: environmentBytes.count)
        var encoded = true
        let key = SecretBytes(count: length) { output in
            var position = 0
            func append(_ bytes: [UInt8]) {
                for byte in bytes {
                    output[position] = byte
                    position += 1
                }
            }
            /// Encodes `input` into the next `width` characters.
            func appendBase62(_ input: UnsafeRawBufferPointer, width: Int) {
                let field = UnsafeMutableRawBufferPointer(rebasing: output[position..<(position + width)])
                encoded = Base62.encode(input, into: field) && encoded
                position += width
            }
            append(prefixBytes)
            append(environmentBytes)
            append([separator])
            keyID.withUnsafeBytes { appendBase62($0, width: keyIDWidth) }
            append([separator])
            secret.withUnsafeBytes { appendBase62($0, width: secretWidth) }
            let checksum = CRC32.checksum(UnsafeRawBufferPointer(rebasing: output[0..<position]))
            withUnsafeBytes(of: checksum.bigEndian) { appendBase62($0, width: checksumWidth) }
            precondition(position == length, "API key layout")
        }
        // The widths are chosen so every value fits.
        precondition(encoded, "API key field overflows its width")
        return key
    }

    /// Checks the layout and checksum of a key, without any database or HSM call.
    ///
    /// - Parameter key: the whole key's UTF-8 text.
    /// - Returns: the environment, the public key id and the whole key (the same instance).
    /// - Throws: ``APIKeyFormatError/malformed(_:)`` if the layout is wrong,
    ///   ``APIKeyFormatError/checksumMismatch`` if the layout is right but the checksum is not.
    public static func parse(_ key: SecretBytes) throws(APIKeyFormatError) -> ParsedAPIKey {
        let fields = key.withUnsafeBytes { text in parseFields(text) }
        switch fields {
        case .success(let (environment, keyID)):
            return ParsedAPIKey(environment: environment, keyID: keyID, whole: key)
        case .failure(let error):
            throw error
        }
    }

    /// Checks the layout and checksum of a key held in a `String`.
    ///
    /// Prefer ``parse(_:)-(SecretBytes)`` when the caller can keep the key out of a `String`.
    /// - Throws: as ``parse(_:)-(SecretBytes)``.
    public static func parse(_ key: String) throws(APIKeyFormatError) -> ParsedAPIKey {
        try parse(SecretBytes(key.utf8))
    }

    private static func parseFields(_ text: UnsafeRawBufferPointer) -> Result<(String, String), APIKeyFormatError> {
        let shortest = keyLength(environmentLength: 1)
        let longest = keyLength(environmentLength: maximumEnvironmentLength)
        guard text.count >= prefixBytes.count, text.starts(with: prefixBytes) else {
            return .failure(.malformed(.unknownPrefix))
        }
        guard (shortest...longest).contains(text.count) else {
            return .failure(.malformed(.wrongLength))
        }
        // The environment ends at the first separator after the prefix.
        let environmentStart = prefixBytes.count
        guard let environmentEnd = text[environmentStart...].firstIndex(of: separator) else {
            return .failure(.malformed(.missingSeparator))
        }
        let environmentBytes = Array(text[environmentStart..<environmentEnd])
        guard isValidEnvironment(environmentBytes) else {
            return .failure(.malformed(.invalidEnvironment))
        }
        guard text.count == keyLength(environmentLength: environmentBytes.count) else {
            return .failure(.malformed(.wrongLength))
        }
        let keyIDStart = environmentEnd + 1
        let keyIDEnd = keyIDStart + keyIDWidth
        guard text[keyIDEnd] == separator else {
            return .failure(.malformed(.missingSeparator))
        }
        let secretStart = keyIDEnd + 1
        let checksumStart = secretStart + secretWidth
        let keyIDText = UnsafeRawBufferPointer(rebasing: text[keyIDStart..<keyIDEnd])
        let secretText = UnsafeRawBufferPointer(rebasing: text[secretStart..<checksumStart])
        let checksumText = UnsafeRawBufferPointer(rebasing: text[checksumStart...])
        guard Base62.isBase62(keyIDText), Base62.isBase62(secretText), Base62.isBase62(checksumText) else {
            return .failure(.malformed(.notBase62))
        }

        // Fixed-width fields may still spell a number too large for their byte count.
        var keyID = [UInt8](repeating: 0, count: keyIDByteCount)
        var checksum = [UInt8](repeating: 0, count: 4)
        var secretFits = false
        _ = SecretBytes(count: secretByteCount) { secretFits = Base62.decode(secretText, into: $0) }
        let keyIDFits = keyID.withUnsafeMutableBytes { Base62.decode(keyIDText, into: $0) }
        let checksumFits = checksum.withUnsafeMutableBytes { Base62.decode(checksumText, into: $0) }
        guard keyIDFits, secretFits, checksumFits else {
            return .failure(.malformed(.valueOutOfRange))
        }

        let expected = CRC32.checksum(UnsafeRawBufferPointer(rebasing: text[..<checksumStart]))
        let found = checksum.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard expected == found else { return .failure(.checksumMismatch) }

        return .success((String(decoding: environmentBytes, as: UTF8.self), String(decoding: keyIDText, as: UTF8.self)))
    }

    /// Whether `text` has a key id's shape (``keyIDWidth`` base62 characters): checked before
    /// any lookup, so a whole key pasted where its id belongs goes no further.
    public static func isKeyID(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { $0.count == keyIDWidth && Base62.isBase62(UnsafeRawBufferPointer($0)) }
    }

    private static func isValidEnvironment(_ bytes: [UInt8]) -> Bool {
        (1...maximumEnvironmentLength).contains(bytes.count)
            && bytes.allSatisfy { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
}

/// An API key whose layout and checksum are right. Says nothing about whether the key exists.
public struct ParsedAPIKey: Sendable, CustomStringConvertible {
    /// The environment, e.g. `live`.
    public let environment: String
    /// The public key id: the 11 base62 characters, for lookup and display.
    public let keyID: String
    /// The whole key's text: what the HSM HMACs.
    public let whole: SecretBytes

    public var description: String { "ParsedAPIKey(environment: \(environment), keyID: \(keyID), <redacted>)" }
}

/// Why a text is not an API key. Descriptions never contain any part of the key.
public enum APIKeyFormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text does not have the layout of a key.
    case malformed(Reason)
    /// The layout is right but the checksum does not match: a typo or a made-up key.
    case checksumMismatch

    /// What is wrong with the layout.
    public enum Reason: String, Sendable, Equatable {
        case wrongLength = "wrong length"
        case unknownPrefix = "unknown prefix"
        case invalidEnvironment = "invalid environment"
        case missingSeparator = "missing separator"
        case notBase62 = "not base62"
        case valueOutOfRange = "value out of range"
        case wrongKeyIDLength = "wrong key id length"
        case wrongSecretLength = "wrong secret length"
    }

    public var description: String {
        switch self {
        case .malformed(let reason): "malformed API key: \(reason.rawValue)"
        case .checksumMismatch: "API key checksum mismatch"
        }
    }
}

import Custody
import SecureMemory
import Testing

@Suite("API key format")
struct APIKeyFormatTests {
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    private static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in generator.next() }
    }

    private static func bytes(of secret: SecretBytes) -> [UInt8] {
        secret.withUnsafeBytes { Array($0) }
    }

    private static func text(of secret: SecretBytes) -> String {
        String(decoding: bytes(of: secret), as: UTF8.self)
    }

    /// A fresh key and the parts it was made from.
    private static func makeKey(environment: String = "live") throws -> (key: SecretBytes, keyID: [UInt8], secret: [UInt8]) {
        let keyID = randomBytes(8)
        let secret = randomBytes(32)
        let key = try APIKeyFormat.make(environment: environment, keyID: keyID, secret: SecretBytes(secret))
        return (key, keyID, secret)
    }

    /// Builds a key by hand from the public Base62 and CRC32, independently of `make`.
    private static func assemble(environment: String, keyIDText: String, secretText: String) -> String {
        let body = "custos_\(environment)_\(keyIDText)_\(secretText)"
        let crc = CRC32.checksum(Array(body.utf8))
        let crcBytes = [UInt8(crc >> 24), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc & 0xFF)]
        return body + Base62.encode(crcBytes, width: 6)!
    }

    // MARK: CRC-32

    @Test("CRC-32 gives the standard check value and zlib's known answers")
    func crc32KnownAnswers() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        #expect(CRC32.checksum(Array("The quick brown fox jumps over the lazy dog".utf8)) == 0x414F_A339)
        let bytes = Self.randomBytes(100)
        #expect(bytes.withUnsafeBytes { CRC32.checksum($0) } == CRC32.checksum(bytes))
    }

    // MARK: Base62

    @Test("Base62 has fixed widths at the extremes")
    func base62Extremes() {
        #expect(Base62.encode([UInt8](repeating: 0, count: 8), width: 11) == "00000000000")
        #expect(Base62.encode([UInt8](repeating: 0xFF, count: 8), width: 11) == "LygHa16AHYF")
        #expect(Base62.encode([UInt8](repeating: 0, count: 32), width: 43) == String(repeating: "0", count: 43))
        #expect(Base62.encode([UInt8](repeating: 0xFF, count: 32), width: 43) == "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1")
        #expect(Base62.encode([UInt8](repeating: 0xFF, count: 4), width: 6) == "4gfFC3")
        #expect(Base62.decode("LygHa16AHYF", byteCount: 8) == [UInt8](repeating: 0xFF, count: 8))
        #expect(Base62.decode("00000000000", byteCount: 8) == [UInt8](repeating: 0, count: 8))
        #expect(Base62.decode("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1", byteCount: 32) == [UInt8](repeating: 0xFF, count: 32))
    }

    @Test("Base62 is big-endian with the 0-9A-Za-z alphabet")
    func base62SmallValues() {
        #expect(Base62.encode([1], width: 2) == "01")
        #expect(Base62.encode([10], width: 1) == "A")
        #expect(Base62.encode([36], width: 1) == "a")
        #expect(Base62.encode([61], width: 1) == "z")
        #expect(Base62.encode([62], width: 2) == "10")
        #expect(Base62.encode([0x01, 0x00], width: 3) == "048")
        #expect(Base62.decode("048", byteCount: 2) == [0x01, 0x00])
        #expect(Base62.decode("", byteCount: 2) == [0, 0])
    }

    @Test("Base62 refuses values that do not fit", arguments: [
        ("LygHa16AHYG", 8), ("zzzzzzzzzzz", 8), ("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp2", 32), ("4gfFC4", 4), ("100", 1),
    ])
    func base62Overflow(text: String, byteCount: Int) {
        #expect(Base62.decode(text, byteCount: byteCount) == nil)
    }

    @Test("Base62 refuses characters outside the alphabet", arguments: ["0000000000-", "000 0000000", "+", "=", "é", "_"])
    func base62Alphabet(text: String) {
        #expect(Base62.decode(text, byteCount: 8) == nil)
    }

    @Test("Base62 encode refuses a width that is too small")
    func base62Width() {
        #expect(Base62.encode([UInt8](repeating: 0xFF, count: 8), width: 10) == nil)
        #expect(Base62.encode([UInt8](repeating: 0xFF, count: 32), width: 42) == nil)
        #expect(Base62.encode([62], width: 1) == nil)
        #expect(Base62.encode(SecretBytes([UInt8](repeating: 0xFF, count: 32)), width: 42) == nil)
    }

    @Test("Base62 round-trips random values at fixed widths")
    func base62RoundTrip() throws {
        for _ in 0..<200 {
            for (count, width) in [(8, 11), (32, 43), (4, 6)] {
                let bytes = Self.randomBytes(count)
                let text = try #require(Base62.encode(bytes, width: width))
                #expect(text.count == width)
                #expect(Base62.decode(text, byteCount: count) == bytes)
                let secretText = try #require(Base62.encode(SecretBytes(bytes), width: width))
                #expect(Self.text(of: secretText) == text)
            }
        }
    }

    // MARK: make / parse

    @Test("A made key has the documented layout and parses back")
    func makeAndParse() throws {
        let (key, keyID, secret) = try Self.makeKey()
        let text = Self.text(of: key)
        #expect(key.count == 7 + 4 + 1 + 11 + 1 + 43 + 6)
        #expect(text.hasPrefix("custos_live_"))
        let keyIDText = try #require(Base62.encode(keyID, width: 11))
        let secretText = try #require(Base62.encode(secret, width: 43))
        #expect(text == Self.assemble(environment: "live", keyIDText: keyIDText, secretText: secretText))

        let parsed = try APIKeyFormat.parse(key)
        #expect(parsed.environment == "live")
        #expect(parsed.keyID == keyIDText)
        #expect(Base62.decode(parsed.keyID, byteCount: 8) == keyID)
        #expect(parsed.whole == key)
        #expect(Self.bytes(of: parsed.whole) == Self.bytes(of: key))

        let fromString = try APIKeyFormat.parse(text)
        #expect(fromString.keyID == parsed.keyID)
        #expect(fromString.environment == "live")
        #expect(fromString.whole == key)
    }

    @Test("Environments of 1 to 8 characters of [a-z0-9] work", arguments: ["t", "live", "test", "dev2", "abcdefgh", "0"])
    func environments(environment: String) throws {
        let (key, _, _) = try Self.makeKey(environment: environment)
        #expect(key.count == 69 + environment.count)
        #expect(try APIKeyFormat.parse(key).environment == environment)
    }

    @Test("make refuses bad environments and wrong input sizes")
    func makeRefuses() {
        let secret = SecretBytes(Self.randomBytes(32))
        let keyID = Self.randomBytes(8)
        for environment in ["", "abcdefghi", "Live", "li_ve", "li-ve", "prød", " live"] {
            #expect(throws: APIKeyFormatError.malformed(.invalidEnvironment)) {
                try APIKeyFormat.make(environment: environment, keyID: keyID, secret: secret)
            }
        }
        for count in [0, 7, 9, 16] {
            #expect(throws: APIKeyFormatError.malformed(.wrongKeyIDLength)) {
                try APIKeyFormat.make(environment: "live", keyID: Self.randomBytes(count), secret: secret)
            }
        }
        for count in [0, 31, 33, 64] {
            #expect(throws: APIKeyFormatError.malformed(.wrongSecretLength)) {
                try APIKeyFormat.make(environment: "live", keyID: keyID, secret: SecretBytes(Self.randomBytes(count)))
            }
        }
    }

    @Test("Changing any single character of a key is detected")
    func singleCharacterChanges() throws {
        let (key, _, _) = try Self.makeKey()
        let original = Array(Self.text(of: key))
        let replacements = Self.alphabet + ["_", "-", "+", "/", "="]
        var tried = 0
        for position in original.indices {
            for replacement in replacements where replacement != original[position] {
                var mutated = original
                mutated[position] = replacement
                #expect(throws: APIKeyFormatError.self, "position \(position)") {
                    try APIKeyFormat.parse(String(mutated))
                }
                tried += 1
            }
        }
        #expect(tried == original.count * (replacements.count - 1))
    }

    @Test("Swapping adjacent characters is detected")
    func transpositions() throws {
        let (key, _, _) = try Self.makeKey()
        let original = Array(Self.text(of: key))
        for position in original.indices.dropLast() where original[position] != original[position + 1] {
            var mutated = original
            mutated.swapAt(position, position + 1)
            #expect(throws: APIKeyFormatError.self, "position \(position)") {
                try APIKeyFormat.parse(String(mutated))
            }
        }
    }

    @Test("A wrong checksum is reported as such")
    func checksumMismatch() throws {
        let (key, _, _) = try Self.makeKey()
        var text = Array(Self.text(of: key))
        let last = text.count - 1
        text[last] = text[last] == "0" ? "1" : "0"
        #expect(throws: APIKeyFormatError.checksumMismatch) { try APIKeyFormat.parse(String(text)) }
        // A change in the secret part with every field well formed: only the checksum can tell.
        var secretChanged = Array(Self.text(of: key))
        secretChanged[30] = secretChanged[30] == "a" ? "b" : "a"
        #expect(throws: APIKeyFormatError.checksumMismatch) { try APIKeyFormat.parse(String(secretChanged)) }
    }

    @Test("Wrong lengths are refused")
    func wrongLengths() throws {
        let (key, _, _) = try Self.makeKey()
        let text = Self.text(of: key)
        #expect(throws: APIKeyFormatError.malformed(.wrongLength)) { try APIKeyFormat.parse(String(text.dropLast())) }
        #expect(throws: APIKeyFormatError.malformed(.wrongLength)) { try APIKeyFormat.parse(text + "0") }
        #expect(throws: APIKeyFormatError.malformed(.wrongLength)) { try APIKeyFormat.parse(text + String(repeating: "0", count: 20)) }
        #expect(throws: APIKeyFormatError.malformed(.wrongLength)) { try APIKeyFormat.parse("custos_") }
        #expect(throws: APIKeyFormatError.malformed(.wrongLength)) { try APIKeyFormat.parse(String(text.prefix(40))) }
    }

    @Test("Other prefixes are refused", arguments: ["", "c", "custos", "Custos_live_", "ghp_0123456789", "custos-live-", " custos_live_"])
    func unknownPrefixes(prefix: String) throws {
        let (key, _, _) = try Self.makeKey()
        let rest = Self.text(of: key).dropFirst("custos_live_".count)
        #expect(throws: APIKeyFormatError.malformed(.unknownPrefix)) { try APIKeyFormat.parse(prefix) }
        #expect(throws: APIKeyFormatError.malformed(.unknownPrefix)) { try APIKeyFormat.parse(prefix + rest) }
    }

    @Test("Characters outside base62 in the key id, secret or checksum are refused")
    func notBase62() throws {
        let (key, _, _) = try Self.makeKey()
        let original = Array(Self.text(of: key))
        // custos_live_ is 12 characters; key id 12..<23, separator 23, secret 24..<67, checksum 67..<73.
        for position in [12, 22, 24, 50, 66, 67, 72] {
            for bad in ["-", "+", "/", "=", " ", "."] as [Character] {
                var mutated = original
                mutated[position] = bad
                #expect(throws: APIKeyFormatError.malformed(.notBase62), "position \(position)") {
                    try APIKeyFormat.parse(String(mutated))
                }
            }
        }
    }

    @Test("Structure errors: environment and separators")
    func structureErrors() throws {
        let (key, _, _) = try Self.makeKey()
        let original = Array(Self.text(of: key))
        var upper = original
        upper[7] = "L"
        #expect(throws: APIKeyFormatError.malformed(.invalidEnvironment)) { try APIKeyFormat.parse(String(upper)) }
        var noSeparator = original
        noSeparator[23] = "x"
        #expect(throws: APIKeyFormatError.malformed(.missingSeparator)) { try APIKeyFormat.parse(String(noSeparator)) }
        var emptyEnvironment = original
        emptyEnvironment[7] = "_"
        #expect(throws: APIKeyFormatError.malformed(.invalidEnvironment)) { try APIKeyFormat.parse(String(emptyEnvironment)) }
        let noUnderscoreAtAll = "custos_" + String(repeating: "a", count: 66)
        #expect(throws: APIKeyFormatError.malformed(.missingSeparator)) { try APIKeyFormat.parse(noUnderscoreAtAll) }
    }

    @Test("Fields that overflow their byte counts are refused even with a right checksum")
    func valuesOutOfRange() throws {
        let zeros = String(repeating: "0", count: 43)
        let good = Self.assemble(environment: "test", keyIDText: "LygHa16AHYF", secretText: "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1")
        #expect(try APIKeyFormat.parse(good).keyID == "LygHa16AHYF")
        let bigKeyID = Self.assemble(environment: "test", keyIDText: "LygHa16AHYG", secretText: zeros)
        #expect(throws: APIKeyFormatError.malformed(.valueOutOfRange)) { try APIKeyFormat.parse(bigKeyID) }
        let bigSecret = Self.assemble(environment: "test", keyIDText: "00000000000", secretText: "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp2")
        #expect(throws: APIKeyFormatError.malformed(.valueOutOfRange)) { try APIKeyFormat.parse(bigSecret) }
        var bigChecksum = Array(Self.assemble(environment: "test", keyIDText: "00000000000", secretText: zeros))
        bigChecksum.replaceSubrange(bigChecksum.count - 6..<bigChecksum.count, with: Array("zzzzzz"))
        #expect(throws: APIKeyFormatError.malformed(.valueOutOfRange)) { try APIKeyFormat.parse(String(bigChecksum)) }
    }

    @Test("Error and value descriptions contain no part of the key")
    func descriptionsAreRedacted() throws {
        let (key, _, _) = try Self.makeKey()
        let text = Self.text(of: key)
        let keyIDText = String(Array(text)[12..<23])
        let secretText = String(Array(text)[24..<67])
        var errors: [APIKeyFormatError] = []
        var original = Array(text)
        for position in original.indices {
            var mutated = original
            mutated[position] = mutated[position] == "-" ? "+" : "-"
            do {
                _ = try APIKeyFormat.parse(String(mutated))
            } catch {
                errors.append(error)
            }
        }
        original[70] = original[70] == "0" ? "1" : "0"
        do { _ = try APIKeyFormat.parse(String(original)) } catch { errors.append(error) }
        #expect(errors.count == text.count + 1)
        #expect(errors.contains(.checksumMismatch))
        let fixed: Set<String> = [
            "wrong length", "unknown prefix", "invalid environment", "missing separator", "not base62",
            "value out of range", "wrong key id length", "wrong secret length",
        ]
        for error in errors {
            let description = error.description
            #expect(!description.contains(keyIDText))
            #expect(!description.contains(secretText))
            #expect(!description.contains(String(secretText.prefix(6))))
            #expect(!description.contains(String(text.suffix(6))))
            #expect(!description.contains("live"))
            if case .malformed(let reason) = error {
                #expect(fixed.contains(reason.rawValue))
                #expect(description == "malformed API key: \(reason.rawValue)")
            }
            #expect(!String(reflecting: error).contains(secretText))
        }

        let parsed = try APIKeyFormat.parse(key)
        for description in [parsed.description, String(reflecting: parsed), parsed.whole.description, "\(parsed)"] {
            #expect(!description.contains(secretText))
            #expect(!description.contains(String(secretText.prefix(8))))
        }
        #expect(parsed.description.contains(keyIDText))
    }
}

import Crypto
import Custody
import Foundation
import SecureMemory
import Testing

@Suite("Standard Webhooks")
struct WebhookVerifierTests {
    // The spec's own test vector (DESIGN §8).
    private static let specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    private static let specID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    private static let specTimestamp: Int64 = 1_614_265_330
    private static let specBody = Array(#"{"test": 2432232314}"#.utf8)
    private static let specSignature = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

    private static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in generator.next() }
    }

    private static func hmac(_ secret: SecretBytes, _ content: [UInt8]) -> [UInt8] {
        let key = secret.withUnsafeBytes { SymmetricKey(data: Array($0)) }
        return Array(HMAC<SHA256>.authenticationCode(for: content, using: key))
    }

    private static func sign(_ secret: SecretBytes, id: String, timestamp: Int64, body: [UInt8]) -> String {
        let mac = hmac(secret, StandardWebhooks.signedContent(id: id, timestamp: timestamp, body: body))
        return StandardWebhooks.signatureHeader([(version: "v1", signature: mac)])
    }

    // MARK: The spec vector

    @Test("The spec vector's HMAC over the signed content is the published signature")
    func specVectorSignature() throws {
        let secret = try StandardWebhooks.decodeSecret(Self.specSecret)
        #expect(secret.count == 24)
        let content = StandardWebhooks.signedContent(id: Self.specID, timestamp: Self.specTimestamp, body: Self.specBody)
        #expect(String(decoding: content, as: UTF8.self) == #"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#)
        let mac = Self.hmac(secret, content)
        #expect(StandardWebhooks.base64Encode(mac) == Self.specSignature)
        #expect(StandardWebhooks.signatureHeader([(version: "v1", signature: mac)]) == "v1,\(Self.specSignature)")
    }

    @Test("The verifier accepts the spec vector")
    func specVectorVerifies() throws {
        let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(Self.specSecret)])
        try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: "v1,\(Self.specSignature)",
                            body: Self.specBody, now: Self.specTimestamp)
        // Within the ±300 s tolerance, at both edges.
        try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: "v1,\(Self.specSignature)",
                            body: Self.specBody, now: Self.specTimestamp + 300)
        try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: "v1,\(Self.specSignature)",
                            body: Self.specBody, now: Self.specTimestamp - 300)
        // The secret without its prefix decodes to the same key.
        let bare = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(String(Self.specSecret.dropFirst(6)))])
        try bare.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: "v1,\(Self.specSignature)",
                        body: Self.specBody, now: Self.specTimestamp)
    }

    @Test("Tampering with the spec vector is refused")
    func specVectorTampered() throws {
        let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(Self.specSecret)])
        let header = "v1,\(Self.specSignature)"
        var body = Self.specBody
        body[body.count - 2] ^= 1
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: header, body: body, now: Self.specTimestamp)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: header, body: Self.specBody + [0x20], now: Self.specTimestamp)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: "msg_other", timestamp: "1614265330", signatureHeader: header, body: Self.specBody, now: Self.specTimestamp)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: Self.specID, timestamp: "1614265331", signatureHeader: header, body: Self.specBody, now: Self.specTimestamp)
        }
        // The right MAC under another version tag does not count.
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: "v1a,\(Self.specSignature)", body: Self.specBody, now: Self.specTimestamp)
        }
        let wrong = WebhookVerifier(secrets: [SecretBytes(Self.randomBytes(32))])
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try wrong.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: header, body: Self.specBody, now: Self.specTimestamp)
        }
        let none = WebhookVerifier()
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try none.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: header, body: Self.specBody, now: Self.specTimestamp)
        }
    }

    // MARK: Timestamps and headers

    @Test("Timestamps more than 300 s away are refused, with the direction")
    func timestampWindow() throws {
        let secret = SecretBytes(Self.randomBytes(32))
        let verifier = WebhookVerifier(secrets: [secret])
        let now: Int64 = 1_700_000_000
        let body = Self.randomBytes(50)
        for offset: Int64 in [-300, 0, 300] {
            let timestamp = now + offset
            try verifier.verify(id: "msg_1", timestamp: String(timestamp), signatureHeader: Self.sign(secret, id: "msg_1", timestamp: timestamp, body: body), body: body, now: now)
        }
        let old = now - 301
        #expect(throws: WebhookVerificationError.timestampTooOld) {
            try verifier.verify(id: "msg_1", timestamp: String(old), signatureHeader: Self.sign(secret, id: "msg_1", timestamp: old, body: body), body: body, now: now)
        }
        let ahead = now + 301
        #expect(throws: WebhookVerificationError.timestampTooNew) {
            try verifier.verify(id: "msg_1", timestamp: String(ahead), signatureHeader: Self.sign(secret, id: "msg_1", timestamp: ahead, body: body), body: body, now: now)
        }
        // A custom tolerance.
        let strict = WebhookVerifier(secrets: [secret], tolerance: .seconds(10))
        let eleven = now - 11
        #expect(throws: WebhookVerificationError.timestampTooOld) {
            try strict.verify(id: "msg_1", timestamp: String(eleven), signatureHeader: Self.sign(secret, id: "msg_1", timestamp: eleven, body: body), body: body, now: now)
        }
        #expect(throws: WebhookVerificationError.timestampTooNew) {
            try verifier.verify(id: "msg_1", timestamp: String(Int64.max), signatureHeader: "v1,AAAA", body: body, now: now)
        }
        #expect(throws: WebhookVerificationError.timestampTooOld) {
            try verifier.verify(id: "msg_1", timestamp: "0", signatureHeader: "v1,AAAA", body: body, now: now)
        }
    }

    @Test("Non-numeric timestamps are refused", arguments: ["", "abc", "-5", "+1614265330", "1614265330.0", " 1614265330", "1614265330 ", "0x60389b72", "99999999999999999999", "١٢٣"])
    func malformedTimestamps(timestamp: String) throws {
        let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(Self.specSecret)])
        #expect(throws: WebhookVerificationError.malformedTimestamp) {
            try verifier.verify(id: Self.specID, timestamp: timestamp, signatureHeader: "v1,\(Self.specSignature)", body: Self.specBody, now: Self.specTimestamp)
        }
    }

    @Test("An empty id is refused")
    func missingID() throws {
        let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(Self.specSecret)])
        #expect(throws: WebhookVerificationError.missingID) {
            try verifier.verify(id: "", timestamp: "1614265330", signatureHeader: "v1,\(Self.specSignature)", body: Self.specBody, now: Self.specTimestamp)
        }
    }

    @Test("Headers without a parseable entry are refused", arguments: [
        "", " ", "v1", "v1,", ",g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,not base64!", "v1,g0hM9Ss",
        "v1;g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=\n",
    ])
    func malformedHeaders(header: String) throws {
        let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(Self.specSecret)])
        #expect(throws: WebhookVerificationError.malformedSignatureHeader) {
            try verifier.verify(id: Self.specID, timestamp: "1614265330", signatureHeader: header, body: Self.specBody, now: Self.specTimestamp)
        }
    }

    @Test("Header parsing skips malformed entries and keeps the rest in order")
    func headerParsing() {
        let entries = StandardWebhooks.parseSignatureHeader("v1,AAAA  bad v1a,AQID v1,@@@@ ,AAAA v1, v2,/w==")
        #expect(entries.map(\.version) == ["v1", "v1a", "v2"])
        #expect(entries.map(\.signature) == [[0, 0, 0], [1, 2, 3], [0xFF]])
        let header = StandardWebhooks.signatureHeader([(version: "v1", signature: [1, 2]), (version: "v1a", signature: [3])])
        #expect(header == "v1,AQI= v1a,Aw==")
        let parsed = StandardWebhooks.parseSignatureHeader(header)
        #expect(parsed.map(\.version) == ["v1", "v1a"])
        #expect(parsed.map(\.signature) == [[1, 2], [3]])
    }

    // MARK: Rotation and Ed25519

    @Test("During rotation a header signed with old and new secrets verifies against either")
    func rotation() throws {
        let old = SecretBytes(Self.randomBytes(32))
        let new = SecretBytes(Self.randomBytes(64))
        let body = Array(#"{"event":"key.rotated"}"#.utf8)
        let now: Int64 = 1_700_000_000
        let content = StandardWebhooks.signedContent(id: "msg_rot", timestamp: now, body: body)
        let header = StandardWebhooks.signatureHeader([
            (version: "v1", signature: Self.hmac(old, content)),
            (version: "v1", signature: Self.hmac(new, content)),
        ])
        #expect(header.split(separator: " ").count == 2)
        for secrets in [[old], [new], [new, old]] {
            try WebhookVerifier(secrets: secrets).verify(id: "msg_rot", timestamp: String(now), signatureHeader: header, body: body, now: now)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [SecretBytes(Self.randomBytes(32))]).verify(id: "msg_rot", timestamp: String(now), signatureHeader: header, body: body, now: now)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [old, new]).verify(id: "msg_rot", timestamp: String(now), signatureHeader: header, body: body + [0], now: now)
        }
    }

    @Test("v1a Ed25519 signatures verify and fail when tampered")
    func ed25519() throws {
        let privateKey = Curve25519.Signing.PrivateKey()
        let publicKey = Array(privateKey.publicKey.rawRepresentation)
        let body = Self.randomBytes(200)
        let now: Int64 = 1_700_000_000
        let content = StandardWebhooks.signedContent(id: "msg_ed", timestamp: now, body: body)
        let signature = Array(try privateKey.signature(for: content))
        #expect(signature.count == 64)
        let header = StandardWebhooks.signatureHeader([(version: "v1a", signature: signature)])
        #expect(header.hasPrefix("v1a,"))

        let published = StandardWebhooks.encodePublicKey(publicKey)
        #expect(published.hasPrefix("whpk_"))
        let verifier = WebhookVerifier(publicKeys: [try StandardWebhooks.decodePublicKey(published)])
        try verifier.verify(id: "msg_ed", timestamp: String(now), signatureHeader: header, body: body, now: now)
        // Mixed with an unknown v1 entry, as a sender signing both ways would send.
        try verifier.verify(id: "msg_ed", timestamp: String(now), signatureHeader: "v1,\(Self.specSignature) " + header, body: body, now: now)

        var tamperedBody = body
        tamperedBody[0] ^= 0x80
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: "msg_ed", timestamp: String(now), signatureHeader: header, body: tamperedBody, now: now)
        }
        var tamperedSignature = signature
        tamperedSignature[10] ^= 1
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: "msg_ed", timestamp: String(now), signatureHeader: StandardWebhooks.signatureHeader([(version: "v1a", signature: tamperedSignature)]), body: body, now: now)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try verifier.verify(id: "msg_ed", timestamp: String(now), signatureHeader: StandardWebhooks.signatureHeader([(version: "v1", signature: signature)]), body: body, now: now)
        }
        let otherKey = Array(Curve25519.Signing.PrivateKey().publicKey.rawRepresentation)
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(publicKeys: [otherKey]).verify(id: "msg_ed", timestamp: String(now), signatureHeader: header, body: body, now: now)
        }
        // Secrets are not public keys.
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [SecretBytes(publicKey)]).verify(id: "msg_ed", timestamp: String(now), signatureHeader: header, body: body, now: now)
        }
    }

    // MARK: Base64, secrets, public keys

    @Test("Base64 matches RFC 4648's vectors, padding included", arguments: [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
    ])
    func base64Vectors(plain: String, encoded: String) {
        #expect(StandardWebhooks.base64Encode(Array(plain.utf8)) == encoded)
        #expect(StandardWebhooks.base64Decode(encoded) == Array(plain.utf8))
    }

    @Test("Base64 round-trips every length and byte value")
    func base64RoundTrip() {
        for count in 0..<100 {
            let bytes = Self.randomBytes(count)
            let encoded = StandardWebhooks.base64Encode(bytes)
            #expect(encoded.count == (count + 2) / 3 * 4)
            #expect(encoded == Data(bytes).base64EncodedString())
            #expect(StandardWebhooks.base64Decode(encoded) == bytes)
        }
        let all = (0...255).map { UInt8($0) }
        #expect(StandardWebhooks.base64Decode(StandardWebhooks.base64Encode(all)) == all)
        #expect(StandardWebhooks.base64Encode(all) == Data(all).base64EncodedString())
    }

    @Test("Base64 decoding is strict", arguments: ["Zg", "Zg=", "Zh==", "Zm9=", "Z===", "====", "=Zg=", "Zg==Zg==", "Zm9v\n", "Zm9v ", "Zm9-", "Zm9_", "Zm=v", "Zm8=Zm8=", "Zm9vY", "é"])
    func base64Strict(text: String) {
        #expect(StandardWebhooks.base64Decode(text) == nil)
    }

    @Test("Secrets round-trip through whsec_ text")
    func secretRoundTrip() throws {
        for count in [24, 32, 48, 64] {
            let bytes = Self.randomBytes(count)
            let secret = SecretBytes(bytes)
            let encoded = StandardWebhooks.encodeSecret(secret)
            let text = String(decoding: encoded.withUnsafeBytes { Array($0) }, as: UTF8.self)
            #expect(text == "whsec_" + Data(bytes).base64EncodedString())
            #expect(try StandardWebhooks.decodeSecret(text) == secret)
            #expect(try StandardWebhooks.decodeSecret(String(text.dropFirst(6))) == secret)
        }
        let spec = try StandardWebhooks.decodeSecret(Self.specSecret)
        let reencoded = StandardWebhooks.encodeSecret(spec)
        #expect(String(decoding: reencoded.withUnsafeBytes { Array($0) }, as: UTF8.self) == Self.specSecret)
    }

    @Test("decodeSecret refuses garbage and wrong sizes", arguments: [
        "", "whsec_", "whsec_!!!!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ",
        "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw", "whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_" + Data(repeating: 7, count: 16).base64EncodedString(),
        "whsec_" + Data(repeating: 7, count: 23).base64EncodedString(),
        "whsec_" + Data(repeating: 7, count: 65).base64EncodedString(),
        "whsec_" + Data(repeating: 7, count: 32).base64EncodedString(options: .lineLength64Characters) + "\r\nAA==",
    ])
    func decodeSecretRefuses(text: String) {
        #expect(throws: WebhookVerificationError.malformedSecret) { try StandardWebhooks.decodeSecret(text) }
    }

    @Test("Public keys round-trip through whpk_ text; wrong sizes are refused")
    func publicKeys() throws {
        let key = Array(Curve25519.Signing.PrivateKey().publicKey.rawRepresentation)
        let text = StandardWebhooks.encodePublicKey(key)
        #expect(text == "whpk_" + Data(key).base64EncodedString())
        #expect(try StandardWebhooks.decodePublicKey(text) == key)
        #expect(try StandardWebhooks.decodePublicKey(String(text.dropFirst(5))) == key)
        for bad in ["", "whpk_", "whpk_" + Data(key.dropLast()).base64EncodedString(), "whpk_" + Data(key + [0]).base64EncodedString(), "whpk_%%%%"] {
            #expect(throws: WebhookVerificationError.malformedPublicKey) { try StandardWebhooks.decodePublicKey(bad) }
        }
    }

    @Test("Error descriptions name no secret or signature")
    func descriptionsAreRedacted() {
        let all: [WebhookVerificationError] = [
            .missingID, .malformedTimestamp, .timestampTooOld, .timestampTooNew, .malformedSignatureHeader,
            .noMatchingSignature, .malformedSecret, .malformedPublicKey,
        ]
        #expect(Set(all.map(\.description)).count == all.count)
        for error in all {
            #expect(!error.description.isEmpty)
            for fragment in [Self.specSecret, "MfKQ9r8G", Self.specSignature, "g0hM9SsE", Self.specID] {
                #expect(!error.description.contains(fragment))
                #expect(!String(reflecting: error).contains(fragment))
            }
        }
        let secret = StandardWebhooks.encodeSecret(SecretBytes(Self.randomBytes(32)))
        #expect(!secret.description.contains("whsec_"))
    }
}

import SecureMemory
import Testing

@Suite("Hex: the one encoder and decoder")
struct HexTests {
    @Test("encodes lower-case, two digits a byte, and decodes either case back")
    func roundTrip() {
        let bytes: [UInt8] = [0x00, 0x0f, 0xa5, 0xff]
        #expect(Hex.encode(bytes) == "000fa5ff")
        #expect(Hex.decode("000fa5ff") == bytes)
        #expect(Hex.decode("000FA5FF") == bytes)
        #expect(Hex.decode("") == [])
    }

    // Custody's former `unhex` parsed each pair with `UInt8(_:radix:)`, which takes a sign:
    // "+f" read as 0x0f. An audit anchor or transcript field is lower-case hex or it is damaged.
    @Test("refuses odd lengths, signs and non-hex characters", arguments: ["0", "+f", "-0", "0g", " 0", "zz00"])
    func refusesNonHex(_ text: String) {
        #expect(Hex.decode(text) == nil)
    }

    @Test("decodes a Substring (an anchor line's field) without copying it first")
    func substring() {
        let line = "v2 7 0a0b"
        #expect(Hex.decode(line.split(separator: " ")[2]) == [0x0a, 0x0b])
    }

    @Test("a secret's hex stays in SecretBytes and decodes back to the same secret")
    func secretRoundTrip() throws {
        let secret = SecretBytes([0xde, 0xad, 0xbe, 0xef])
        let hex = Hex.encode(secret: secret)
        #expect(hex.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } == "deadbeef")
        let decoded = try #require(hex.withUnsafeBytes { Hex.decode(secret: $0) })
        #expect(decoded == secret)
        #expect("\(hex)" == "SecretBytes(<redacted>, 8 bytes)")
    }
}

/// Lower-case hexadecimal, the one encoder and decoder in Custos: check values, CKA_IDs, hashes
/// and MACs in logs, audit details and anchors, known answers, and (into protected memory)
/// share bytes. Decoding accepts either case and refuses anything else.
public enum Hex {
    static let digits = Array("0123456789abcdef".utf8)

    /// Lower-case hex of `bytes`, two digits a byte.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = [UInt8]()
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes `text` spells, or nil when its length is odd or it holds a non-hex character.
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 2 == 0 else { return nil }
        var bytes = [UInt8]()
        bytes.reserveCapacity(characters.count / 2)
        var index = 0
        while index < characters.count {
            guard let high = value(characters[index]), let low = value(characters[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    /// Hex of a secret, written straight into protected memory, without a table lookup or a
    /// branch on the secret nibble.
    public static func encode(secret: SecretBytes) -> SecretBytes {
        secret.withUnsafeBytes { bytes in
            SecretBytes(count: bytes.count * 2) { output in
                for (offset, byte) in bytes.enumerated() {
                    output[offset * 2] = digit(byte >> 4)
                    output[offset * 2 + 1] = digit(byte & 0x0F)
                }
            }
        }
    }

    /// '0'…'9', 'a'…'f' for 0…15: 0x30 + n, plus 0x27 when n > 9 (by the sign of 9 − n).
    @inline(__always)
    static func digit(_ nibble: UInt8) -> UInt8 {
        let n = Int(nibble)
        return UInt8(truncatingIfNeeded: n + 0x30 + (((9 - n) >> 8) & 0x27))
    }

    /// Decodes hex characters (a region of a protected buffer) into protected memory. (Validating
    /// the characters branches on them; a share file is read once, by its custodian's ceremony.)
    public static func decode(secret characters: UnsafeRawBufferPointer) -> SecretBytes? {
        guard characters.count % 2 == 0 else { return nil }
        var valid = true
        let decoded = SecretBytes(count: characters.count / 2) { output in
            for offset in 0..<(characters.count / 2) {
                guard let high = value(characters[offset * 2]), let low = value(characters[offset * 2 + 1]) else {
                    valid = false
                    return
                }
                output[offset] = high << 4 | low
            }
        }
        return valid ? decoded : nil
    }

    private static func value(_ character: UInt8) -> UInt8? {
        switch character {
        case 0x30...0x39: character - 0x30
        case 0x61...0x66: character - 0x61 + 10
        case 0x41...0x46: character - 0x41 + 10
        default: nil
        }
    }
}

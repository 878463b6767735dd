public import SecureMemory

/// Fixed-width base62 (alphabet `0-9A-Za-z`): a byte string read as one big-endian unsigned
/// number, written as exactly `width` digits, most significant first and zero-padded.
///
/// The alphabet is in ASCII order, so for equal widths the text order is the numeric order.
/// Secret values are encoded and decoded through ``SecretBytes`` buffers only; any working
/// copy lives in a ``SecretBytes`` as well and is wiped when the call returns.
public enum Base62 {
    /// The 62 digits, in value order.
    static let alphabet: [UInt8] = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Encodes `bytes` as exactly `width` digits, or returns `nil` if the number needs more.
    public static func encode(_ bytes: some Collection<UInt8>, width: Int) -> String? {
        precondition(width >= 0, "negative width")
        let input = Array(bytes)
        var output = [UInt8](repeating: 0, count: width)
        let fits = input.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { encode(source, into: $0) }
        }
        return fits ? String(decoding: output, as: UTF8.self) : nil
    }

    /// Decodes `text` into exactly `byteCount` bytes, or returns `nil` if it contains a
    /// character outside the alphabet or a value that does not fit in `byteCount` bytes.
    public static func decode(_ text: some StringProtocol, byteCount: Int) -> [UInt8]? {
        precondition(byteCount >= 0, "negative byte count")
        let digits = Array(text.utf8)
        var output = [UInt8](repeating: 0, count: byteCount)
        let valid = digits.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { decode(source, into: $0) }
        }
        return valid ? output : nil
    }

    /// Encodes `secret` as exactly `width` digits in a ``SecretBytes``, or returns `nil` if
    /// the number needs more.
    public static func encode(_ secret: SecretBytes, width: Int) -> SecretBytes? {
        precondition(width >= 0, "negative width")
        var fits = false
        let output = secret.withUnsafeBytes { source in
            SecretBytes(count: width) { fits = encode(source, into: $0) }
        }
        return fits ? output : nil
    }

    /// Writes `input` as `output.count` digits. Returns `false` if the number needs more
    /// digits (`output` then holds the low-order digits only).
    static func encode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        var fits = false
        // The working copy is divided in place, so it lives in wiped storage.
        _ = SecretBytes(count: input.count) { number in
            number.copyMemory(from: input)
            for position in output.indices.reversed() {
                var remainder = 0
                for index in number.indices {
                    let current = remainder << 8 | Int(number[index])
                    number[index] = UInt8(truncatingIfNeeded: current / 62)
                    remainder = current % 62
                }
                output[position] = alphabet[remainder]
            }
            var rest: UInt8 = 0
            for byte in number { rest |= byte }
            fits = rest == 0
        }
        return fits
    }

    /// Reads the digits in `input` into `output` (big-endian, `output.count` bytes). Returns
    /// `false` if a character is outside the alphabet or the value overflows `output`;
    /// `output` is then zeroed.
    static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Bool {
        for index in output.indices { output[index] = 0 }
        var valid = true
        for character in input {
            guard let digit = value(of: character) else {
                valid = false
                break
            }
            var carry = digit
            for index in output.indices.reversed() {
                let current = Int(output[index]) * 62 + carry
                output[index] = UInt8(truncatingIfNeeded: current)
                carry = current >> 8
            }
            if carry != 0 {
                valid = false
                break
            }
        }
        if !valid {
            for index in output.indices { output[index] = 0 }
        }
        return valid
    }

    /// Whether every byte of `input` is a base62 digit.
    static func isBase62(_ input: UnsafeRawBufferPointer) -> Bool {
        var valid = true
        for character in input where value(of: character) == nil { valid = false }
        return valid
    }

    /// The value of one digit, or `nil` for a byte outside the alphabet.
    static func value(of character: UInt8) -> Int? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(character - UInt8(ascii: "0"))
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): Int(character - UInt8(ascii: "A")) + 10
        case UInt8(ascii: "a")...UInt8(ascii: "z"): Int(character - UInt8(ascii: "a")) + 36
        default: nil
        }
    }
}

import Crypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The deterministic CSPRNG that expands a projection seed (DESIGN §6 step 2): HMAC-SHA256 in
/// counter mode.
///
/// Block `i` (from 0) is `HMAC-SHA256(key: seed, label ‖ 0x00 ‖ i as UInt64 big-endian)`; the output
/// stream is block 0 ‖ block 1 ‖ …, read as little-endian `UInt32` words, eight per block. With a
/// secret 32-byte seed the blocks are indistinguishable from random (HMAC is a PRF), and the label
/// separates the streams of different projection kinds and dimensions under one seed.
///
/// - Warning: The stream and every way it is consumed (``uniform(below:)``, the sign and
///   permutation order in ``IndexOfMaxHashing``, Box–Muller) are part of the token format:
///   changing any of them changes every token made under an existing key version.
struct SeededGenerator {
    private let keyed: HMAC<SHA256>
    private var counter: UInt64 = 0
    private var block = SIMD8<UInt32>()
    private var used = 8

    /// - Parameters:
    ///   - seed: the key; 32 bytes in Custos.
    ///   - label: domain separation, e.g. `custos/bio/iom/v1/structured/512`.
    init(seed: UnsafeRawBufferPointer, label: String) {
        var keyed = HMAC<SHA256>(key: SymmetricKey(data: seed))
        keyed.update(data: Array(label.utf8) + [0])
        self.keyed = keyed
    }

    /// The next 32 bits of the stream.
    mutating func nextUInt32() -> UInt32 {
        if used == 8 { refill() }
        defer { used += 1 }
        return block[used]
    }

    /// A uniform integer in `0..<bound` by rejection: 32-bit words at or above the largest
    /// multiple of `bound` are skipped, the rest are reduced modulo `bound`.
    mutating func uniform(below bound: Int) -> Int {
        precondition(bound > 0 && bound <= 1 << 32, "bound out of range")
        let wordCount: UInt64 = 1 << 32
        let limit = wordCount - wordCount % UInt64(bound)
        while true {
            let word = UInt64(nextUInt32())
            if word < limit { return Int(word % UInt64(bound)) }
        }
    }

    /// A pair of independent standard normal values (Box–Muller): `u1 = (w1 + 1) / 2³²` in (0, 1],
    /// `u2 = w2 / 2³²` in [0, 1), `r = √(−2 ln u1)`, giving `r·cos 2πu2` then `r·sin 2πu2`.
    mutating func normalPair() -> (Double, Double) {
        let u1 = (Double(nextUInt32()) + 1) * 0x1p-32
        let u2 = Double(nextUInt32()) * 0x1p-32
        let radius = (-2 * log(u1)).squareRoot()
        let angle = 2 * Double.pi * u2
        return (radius * cos(angle), radius * sin(angle))
    }

    private mutating func refill() {
        var message = keyed
        withUnsafeBytes(of: counter.bigEndian) { message.update(data: $0) }
        let mac = message.finalize()
        mac.withUnsafeBytes { raw in
            for index in 0..<8 {
                block[index] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))
            }
        }
        counter += 1
        used = 0
    }
}

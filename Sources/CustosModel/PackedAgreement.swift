/// Counts of equal values between two packed tokens (or gallery fingerprints), 64 bytes per step
/// in SWAR form on 32-bit lanes: the 1:1 score and the 1:N gallery scan use the same code.
///
/// Why not `SIMD64<UInt8>` and `.==`: measured in a release build here, the mask compare and
/// its conversion take ~40 µs per 1 KiB (generic code, not vector instructions); these forms
/// take ~0.15 µs. Why not `UInt64.nonzeroBitCount`: the baseline x86-64 target has no POPCNT
/// instruction, so each word becomes a dozen operations without vectorising.
public enum PackedAgreement {
    /// Equal bytes in `byteCount` bytes (a multiple of 64). A byte of `a ^ b` is zero where the
    /// two agree, and `~(((x & 0x7F…) + 0x7F…) | x)` sets the top bit of exactly the zero bytes;
    /// each byte of a lane counts its own agreements, folded before it can reach 256.
    @inline(__always)
    public static func equalBytes(_ left: UnsafeRawPointer, _ right: UnsafeRawPointer, byteCount: Int) -> Int {
        let low7 = SIMD16<UInt32>(repeating: 0x7F7F_7F7F)
        let ones = SIMD16<UInt32>(repeating: 0x0101_0101)
        var total = 0
        var offset = 0
        while offset < byteCount {
            // At most 63 steps per fold: a byte of `lanes` counts at most one per step.
            let end = min(byteCount, offset + 63 * 64)
            var lanes = SIMD16<UInt32>()
            while offset < end {
                let x = left.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
                    ^ right.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
                let nonzero = ((x & low7) &+ low7) | x
                lanes &+= (~nonzero &>> 7) & ones
                offset += 64
            }
            // The four byte counts of each lane, summed into its top byte (≤ 4 · 63: no overflow).
            total += Int(((lanes &* ones) &>> 24).wrappedSum())
        }
        return total
    }

    /// Equal 2-bit values in `byteCount` bytes (a multiple of 64) packed four to a byte: XOR,
    /// then each 2-bit lane folded to one bit (`~(x | x >> 1)` keeps, in the lane's low bit, 1
    /// exactly when both bits agree), then a SWAR popcount (pairs into nibbles, nibbles into
    /// bytes: at most 4 per byte per step) accumulated per byte and folded every 63 steps.
    @inline(__always)
    public static func equalPairs(_ left: UnsafeRawPointer, _ right: UnsafeRawPointer, byteCount: Int) -> Int {
        let lowBits = SIMD16<UInt32>(repeating: 0x5555_5555)
        let pairs = SIMD16<UInt32>(repeating: 0x3333_3333)
        let nibbles = SIMD16<UInt32>(repeating: 0x0F0F_0F0F)
        let halves = SIMD16<UInt32>(repeating: 0x00FF_00FF)
        let low16 = SIMD16<UInt32>(repeating: 0xFFFF)
        var total = 0
        var offset = 0
        while offset < byteCount {
            // At most 63 steps per fold: a byte of `lanes` grows by at most 4 per step (≤ 252).
            let end = min(byteCount, offset + 63 * 64)
            var lanes = SIMD16<UInt32>()
            while offset < end {
                let x = left.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
                    ^ right.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
                let equal = ~(x | (x &>> 1)) & lowBits
                let perNibble = (equal & pairs) &+ ((equal &>> 2) & pairs)
                lanes &+= (perNibble &+ (perNibble &>> 4)) & nibbles
                offset += 64
            }
            // Bytes into 16-bit halves (≤ 504 each), halves into the lane (≤ 1,008).
            let perHalf = (lanes & halves) &+ ((lanes &>> 8) & halves)
            total += Int(((perHalf & low16) &+ (perHalf &>> 16)).wrappedSum())
        }
        return total
    }

    /// Equal 32-bit values in `byteCount` bytes (a multiple of 64).
    @inline(__always)
    public static func equalWords(_ left: UnsafeRawPointer, _ right: UnsafeRawPointer, byteCount: Int) -> Int {
        let zero = SIMD16<UInt32>(repeating: 0)
        var counts = zero
        var offset = 0
        while offset < byteCount {
            let a = left.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
            let b = right.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt32>.self)
            counts &+= zero.replacing(with: 1, where: a .== b)
            offset += 64
        }
        return Int(counts.wrappedSum())
    }
}

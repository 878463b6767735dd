/// The fast Walsh–Hadamard transform: `y = H·x` for the Sylvester–Hadamard matrix `H` of size n
/// (entries ±1, `H[i][j] = (−1)^popcount(i & j)`, not normalised), in n·log₂ n additions.
public enum WalshHadamard {
    /// Transforms `values` in place.
    ///
    /// - Precondition: `values.count` is a power of two.
    public static func transform(_ values: inout [Float]) {
        let count = values.count
        values.withUnsafeMutableBufferPointer { buffer in
            if let base = buffer.baseAddress { transform(base, count: count) }
        }
    }

    /// Transforms `count` values at `values` in place; for 8 or more values the first three stages
    /// run as one 8-point kernel and the rest eight lanes at a time.
    ///
    /// - Precondition: `count` is a power of two.
    static func transform(_ values: UnsafeMutablePointer<Float>, count: Int) {
        precondition(count > 0 && count & (count - 1) == 0, "the Walsh–Hadamard transform needs a power-of-two size")
        guard count >= 8 else {
            var half = 1
            while half < count {
                var start = 0
                while start < count {
                    for index in start..<(start + half) {
                        let a = values[index], b = values[index + half]
                        values[index] = a + b
                        values[index + half] = a - b
                    }
                    start += 2 * half
                }
                half *= 2
            }
            return
        }
        var base = 0
        while base < count {
            transform8(values + base)
            base += 8
        }
        let raw = UnsafeMutableRawPointer(values)
        let lane = MemoryLayout<SIMD8<Float>>.size
        var half = 8
        while half < count {
            var start = 0
            while start < count {
                var index = start
                while index < start + half {
                    // SAFETY: `index + half + 8 <= start + 2·half <= count`: every access is inside
                    // the `count` values the caller lent.
                    let a = raw.loadUnaligned(fromByteOffset: index * 4, as: SIMD8<Float>.self)
                    let b = raw.loadUnaligned(fromByteOffset: (index + half) * 4, as: SIMD8<Float>.self)
                    raw.storeBytes(of: a + b, toByteOffset: index * 4, as: SIMD8<Float>.self)
                    raw.storeBytes(of: a - b, toByteOffset: (index + half) * 4, as: SIMD8<Float>.self)
                    index += lane / 4
                }
                start += 2 * half
            }
            half *= 2
        }
    }

    /// Stages with half-widths 1, 2 and 4 on eight consecutive values.
    @inline(__always)
    private static func transform8(_ v: UnsafeMutablePointer<Float>) {
        let a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3]
        let a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7]
        let b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3
        let b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7
        v[0] = b0 + b4; v[1] = b1 + b5; v[2] = b2 + b6; v[3] = b3 + b7
        v[4] = b0 - b4; v[5] = b1 - b5; v[6] = b2 - b6; v[7] = b3 - b7
    }
}

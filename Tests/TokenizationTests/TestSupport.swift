import Foundation
import Synchronization
import Tokenization

/// Whether this test build is optimised (`swift test -c release`): the heaviest checks
/// (dense-Gaussian accuracy, timings) run only there.
enum Build {
    #if DEBUG
    static let isOptimized = false
    #else
    static let isOptimized = true
    #endif
}

/// SplitMix64: reproducible test data.
struct TestRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal value (Box–Muller).
    mutating func normal() -> Float {
        let u1 = Float.random(in: Float.ulpOfOne...1, using: &self)
        let u2 = Float.random(in: 0..<1, using: &self)
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// A random unit vector.
    mutating func unitVector(dimension: Int) -> [Float] {
        normalised((0..<dimension).map { _ in normal() })
    }

    /// A unit vector whose cosine with the unit vector `base` is `cosine`.
    mutating func unitVector(near base: [Float], cosine: Float) -> [Float] {
        var other = (0..<base.count).map { _ in normal() }
        let projection = zip(other, base).reduce(0) { $0 + $1.0 * $1.1 }
        other = normalised(zip(other, base).map { $0 - projection * $1 })
        let sine = (1 - cosine * cosine).squareRoot()
        return zip(base, other).map { cosine * $0 + sine * $1 }
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }
}

func normalised(_ values: [Float]) -> [Float] {
    let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
    return values.map { $0 / norm }
}


/// The fraction of equal symbols.
func agreement(_ first: [UInt8], _ second: [UInt8]) -> Double {
    Double(zip(first, second).filter { $0 == $1 }.count) / Double(first.count)
}

extension IndexOfMaxHashing {
    /// Symbols as a plain array, for assertions.
    func plainSymbols(for values: [Float]) throws -> [UInt8] {
        try symbols(for: FeatureVector(values)).withUnsafeBytes { Array($0) }
    }
}

/// A fixed 32-byte seed.
func seed(_ value: UInt8) -> [UInt8] { [UInt8](repeating: value, count: 32) }

/// Projections shared between tests: a dense one takes most of a second to derive in a debug build.
enum SharedProjections {
    struct Key: Hashable {
        var seed: [UInt8]
        var dimension: Int
        var kind: IndexOfMaxHashing.ProjectionKind
    }

    private static let cache = Mutex<[Key: IndexOfMaxHashing]>([:])

    static func hashing(seed: [UInt8], dimension: Int, kind: IndexOfMaxHashing.ProjectionKind) throws -> IndexOfMaxHashing {
        let key = Key(seed: seed, dimension: dimension, kind: kind)
        return try cache.withLock { cache in
            if let hashing = cache[key] { return hashing }
            let hashing = try IndexOfMaxHashing(seed: seed, dimension: dimension, kind: kind)
            cache[key] = hashing
            return hashing
        }
    }
}

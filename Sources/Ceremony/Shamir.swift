public import SecureMemory

/// Shamir secret sharing over GF(2⁸), byte by byte (each byte of the secret is the constant
/// term of its own random polynomial of degree M − 1; share i is every polynomial at x = i).
///
/// All arithmetic is ``GF256``'s constant-time code; secrets, coefficients and shares live only
/// in ``SecretBytes`` (locked, wiped on release). Share indices are public.
public enum Shamir {
    /// Splits `secret` into `count` shares, any `threshold` of which give it back.
    /// - Parameters:
    ///   - threshold: M, with 2 ≤ M ≤ N.
    ///   - count: N, at most 255 (indices 1…N).
    ///   - random: the coefficients' source (the HSM RNG in a ceremony).
    /// - Throws: ``ShamirError/invalidParameters(threshold:count:)``, ``ShamirError/emptySecret``,
    ///   or the random source's error.
    public static func split(
        _ secret: SecretBytes, threshold: Int, count: Int, random: any CeremonyRandomSource
    ) async throws -> [ShamirShare] {
        try validate(threshold: threshold, count: count)
        guard secret.count > 0 else { throw ShamirError.emptySecret }
        let length = secret.count
        // Coefficients a₁…a_{M−1} for every byte: (M − 1) · length random bytes.
        let coefficients = try await random.randomSecret(count: (threshold - 1) * length)
        guard coefficients.count == (threshold - 1) * length else { throw ShamirError.randomSourceShort }
        return split(secret, threshold: threshold, count: count, coefficients: coefficients)
    }

    /// The deterministic core of ``split(_:threshold:count:random:)``: coefficient j (1…M−1) of
    /// byte k is `coefficients[k · (M − 1) + j − 1]`.
    static func split(_ secret: SecretBytes, threshold: Int, count: Int, coefficients: SecretBytes) -> [ShamirShare] {
        let length = secret.count
        let degree = threshold - 1
        return secret.withUnsafeBytes { secretBytes in
            coefficients.withUnsafeBytes { coefficientBytes in
                (1...count).map { x in
                    let point = UInt8(x)
                    let value = SecretBytes(count: length) { output in
                        for k in 0..<length {
                            // Horner: ((a_{M−1} · x + a_{M−2}) · x + …) · x + secret.
                            var y: UInt8 = 0
                            var j = degree
                            while j >= 1 {
                                y = GF256.multiply(y, point) ^ coefficientBytes[k * degree + j - 1]
                                j -= 1
                            }
                            y = GF256.multiply(y, point) ^ secretBytes[k]
                            output[k] = y
                        }
                    }
                    return ShamirShare(index: point, value: value)
                }
            }
        }
    }

    /// Interpolates the secret at x = 0 from `shares` (at least the threshold, which the caller
    /// checks: Shamir itself cannot tell a short set from a complete one — ``ShareSet`` does).
    /// - Throws: ``ShamirError`` for no shares, a zero or repeated index, or unequal lengths.
    public static func combine(_ shares: [ShamirShare]) throws(ShamirError) -> SecretBytes {
        guard let length = shares.first?.value.count, length > 0 else { throw .noShares }
        var seen = Set<UInt8>()
        for share in shares {
            guard share.index != 0 else { throw .invalidIndex(0) }
            guard seen.insert(share.index).inserted else { throw .duplicateIndex(share.index) }
            guard share.value.count == length else { throw .lengthMismatch(index: share.index) }
        }
        // Lagrange basis at 0: ℓᵢ(0) = Π_{j≠i} xⱼ / (xⱼ − xᵢ), with − being ⊕ in GF(2⁸).
        let basis: [UInt8] = shares.map { share in
            var numerator: UInt8 = 1
            var denominator: UInt8 = 1
            for other in shares where other.index != share.index {
                numerator = GF256.multiply(numerator, other.index)
                denominator = GF256.multiply(denominator, other.index ^ share.index)
            }
            return GF256.divide(numerator, denominator)
        }
        return SecretBytes(count: length) { output in
            for (share, weight) in zip(shares, basis) {
                share.value.withUnsafeBytes { y in
                    for k in 0..<length {
                        output[k] ^= GF256.multiply(y[k], weight)
                    }
                }
            }
        }
    }

    static func validate(threshold: Int, count: Int) throws(ShamirError) {
        guard threshold >= 2, threshold <= count, count <= 255 else {
            throw .invalidParameters(threshold: threshold, count: count)
        }
    }
}

/// Why a split or combination is refused. Never carries share or secret bytes.
public enum ShamirError: Error, Sendable, Hashable, CustomStringConvertible {
    case invalidParameters(threshold: Int, count: Int)
    case emptySecret
    case randomSourceShort
    case noShares
    case invalidIndex(UInt8)
    case duplicateIndex(UInt8)
    case lengthMismatch(index: UInt8)

    public var description: String {
        switch self {
        case .invalidParameters(let threshold, let count):
            "a \(threshold)-of-\(count) split is not possible: it needs 2 ≤ M ≤ N ≤ 255"
        case .emptySecret: "the secret to split is empty"
        case .randomSourceShort: "the random source returned fewer bytes than asked"
        case .noShares: "no shares to combine"
        case .invalidIndex(let index): "share index \(index) is not valid (1…255)"
        case .duplicateIndex(let index): "share index \(index) appears twice"
        case .lengthMismatch(let index): "share \(index) has a different length from the others"
        }
    }
}

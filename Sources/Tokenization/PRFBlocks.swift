public import CustosModel
import Crypto
public import SecureMemory

/// The AES-ECB input and output of the biometric PRF (DESIGN §6 step 3) for one tenant and key
/// version.
///
/// Input block j (from 0) is 16 bytes: the 8-byte ``tag``, j as a big-endian `UInt16`, the symbol
/// byte, then five zero bytes. All m blocks (one per position) go to the HSM in one `C_Encrypt`
/// (CKM_AES_ECB, `bio-prf` key); ``tokenValues(fromPRFOutput:shape:)`` keeps the top b bits of the
/// first four bytes (big-endian) of each output block. Because the tag binds tenant and version,
/// equal symbols never give equal blocks across tenants or versions even if two keys were equal.
public struct PRFBlocks: Sendable, Hashable {
    /// AES's block size.
    public static let blockSize = 16

    /// The size of the PRF input and output for tokens of `shape`: one block per position.
    public static func byteCount(for shape: BiometricTokenShape) -> Int { shape.positions * blockSize }

    /// The first 8 bytes of `SHA-256("custos/bio/v1" ‖ 0x00 ‖ tenant id as lower-case UUID text ‖
    /// key version as a big-endian Int64)`.
    public let tag: [UInt8]

    /// - Parameters:
    ///   - tenant: the tenant whose `bio-prf` key will run the PRF.
    ///   - keyVersion: the `bio` key version (seed and PRF rotate together).
    public init(tenant: TenantID, keyVersion: Int) {
        var hash = SHA256()
        hash.update(data: Array("custos/bio/v1".utf8) + [0] + Array(tenant.rawValue.utf8))
        withUnsafeBytes(of: Int64(keyVersion).bigEndian) { hash.update(bufferPointer: $0) }
        tag = Array(hash.finalize().prefix(8))
    }

    /// One input block per symbol, in wiped storage (the symbols are sensitive).
    ///
    /// - Precondition: `symbols` holds at most ``BiometricTokenShape/maxPositions`` bytes, each
    ///   below `symbolsPerPosition` (the format's q), as ``IndexOfMaxHashing/symbols(for:)``
    ///   returns them.
    public func input(for symbols: SecretBytes, symbolsPerPosition: Int = 16) -> SecretBytes {
        precondition(symbols.count <= BiometricTokenShape.maxPositions, "at most \(BiometricTokenShape.maxPositions) symbols")
        return symbols.withUnsafeBytes { symbolBytes in
            SecretBytes(count: symbols.count * Self.blockSize) { blocks in
                for index in 0..<symbols.count {
                    let symbol = symbolBytes[index]
                    precondition(Int(symbol) < symbolsPerPosition, "a symbol is below \(symbolsPerPosition)")
                    let start = index * Self.blockSize
                    for (offset, byte) in tag.enumerated() { blocks[start + offset] = byte }
                    blocks[start + 8] = UInt8(truncatingIfNeeded: index >> 8)
                    blocks[start + 9] = UInt8(truncatingIfNeeded: index)
                    blocks[start + 10] = symbol
                    // Bytes 11–15 stay zero: `SecretBytes` starts zeroed.
                }
            }
        }
    }

    /// The token values: the top b bits of the first four bytes, big-endian, of each 16-byte
    /// block of the PRF output — all 32 for ``BiometricTokenFormat/wide``, the first byte for
    /// ``BiometricTokenFormat/compact``, its top 2 bits for ``BiometricTokenFormat/quaternary``
    /// — so a narrower value is always the top of a wider one of the same block.
    ///
    /// - Throws: ``PRFBlocksError/wrongOutputLength(_:expected:)`` unless `output` has
    ///   ``byteCount(for:)`` bytes.
    public static func tokenValues(fromPRFOutput output: [UInt8], shape: BiometricTokenShape) throws(PRFBlocksError) -> [UInt32] {
        guard output.count == byteCount(for: shape) else { throw .wrongOutputLength(output.count, expected: byteCount(for: shape)) }
        let shift = UInt32(32 - shape.bitsPerValue)
        return output.withUnsafeBytes { raw in
            (0..<shape.positions).map { index in
                UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: index * blockSize, as: UInt32.self)) >> shift
            }
        }
    }

    /// ``tokenValues(fromPRFOutput:shape:)`` for `format`'s shape.
    public static func tokenValues(fromPRFOutput output: [UInt8], format: BiometricTokenFormat = .wide) throws(PRFBlocksError) -> [UInt32] {
        try tokenValues(fromPRFOutput: output, shape: format.shape)
    }
}

/// Why a PRF output could not become a token.
public enum PRFBlocksError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The PRF returned this many bytes instead of one block per position.
    case wrongOutputLength(Int, expected: Int)

    public var description: String {
        switch self {
        case .wrongOutputLength(let count, let expected):
            "the biometric PRF returned \(count) bytes, not \(expected)"
        }
    }
}

public import CustosModel
import Crypto
public import SecureMemory

/// The AES-ECB input and output of the biometric PRF (DESIGN §6 step 3) for one tenant and key
/// version.
///
/// Input block j (from 0) is 16 bytes: the 8-byte ``tag``, j as a big-endian `UInt16`, the symbol
/// byte, then five zero bytes. All 1,024 blocks go to the HSM in one `C_Encrypt` (CKM_AES_ECB,
/// `bio-prf` key); ``tokenValues(fromPRFOutput:)`` keeps the first four bytes (big-endian) of each
/// output block. Because the tag binds tenant and version, equal symbols never give equal blocks
/// across tenants or versions even if two keys were equal.
public struct PRFBlocks: Sendable, Hashable {
    /// AES's block size.
    public static let blockSize = 16
    /// The size of the PRF input and output: 1,024 blocks.
    public static let byteCount = IndexOfMaxHashing.symbolCount * blockSize

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

    /// The 1,024 input blocks for `symbols`, in wiped storage (the symbols are sensitive).
    ///
    /// - Precondition: `symbols` holds ``IndexOfMaxHashing/symbolCount`` bytes, each below 16, as
    ///   ``IndexOfMaxHashing/symbols(for:)`` returns them.
    public func input(for symbols: SecretBytes) -> SecretBytes {
        precondition(symbols.count == IndexOfMaxHashing.symbolCount, "expected \(IndexOfMaxHashing.symbolCount) symbols")
        return symbols.withUnsafeBytes { symbolBytes in
            SecretBytes(count: Self.byteCount) { blocks in
                for index in 0..<IndexOfMaxHashing.symbolCount {
                    let symbol = symbolBytes[index]
                    precondition(symbol < UInt8(IndexOfMaxHashing.projectionsPerSymbol), "a symbol is below 16")
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

    /// The token values: the first four bytes, big-endian, of each 16-byte block of the PRF output
    /// (``BiometricTokenFormat/wide``), or its first byte (``BiometricTokenFormat/compact``) — so
    /// a compact value is the wide value's top byte.
    ///
    /// - Throws: ``PRFBlocksError/wrongOutputLength(_:)`` unless `output` has ``byteCount`` bytes.
    public static func tokenValues(fromPRFOutput output: [UInt8], format: BiometricTokenFormat = .wide) throws(PRFBlocksError) -> [UInt32] {
        guard output.count == byteCount else { throw .wrongOutputLength(output.count) }
        return output.withUnsafeBytes { raw in
            (0..<IndexOfMaxHashing.symbolCount).map { index in
                let wide = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: index * blockSize, as: UInt32.self))
                return format == .wide ? wide : wide >> UInt32(32 - format.bitsPerValue)
            }
        }
    }
}

/// Why a PRF output could not become a token.
public enum PRFBlocksError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The PRF returned this many bytes instead of 16,384.
    case wrongOutputLength(Int)

    public var description: String {
        switch self {
        case .wrongOutputLength(let count):
            "the biometric PRF returned \(count) bytes, not \(PRFBlocks.byteCount)"
        }
    }
}

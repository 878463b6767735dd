@testable import Ceremony
import Crypto
import SecureMemory

/// A deterministic stand-in for the HSM RNG: SHA-256 in counter mode over a seed, so splits are
/// reproducible in tests. Never used outside tests.
struct SeededRandomSource: CeremonyRandomSource {
    let seed: UInt64

    func randomSecret(count: Int) async throws -> SecretBytes {
        SecretBytes(count: count) { buffer in
            var counter: UInt64 = 0
            var offset = 0
            while offset < count {
                var block = withUnsafeBytes(of: seed.bigEndian) { Array($0) }
                block += withUnsafeBytes(of: counter.bigEndian) { Array($0) }
                for byte in SHA256.hash(data: block) where offset < count {
                    buffer[offset] = byte
                    offset += 1
                }
                counter += 1
            }
        }
    }
}

func secret(_ bytes: [UInt8]) -> SecretBytes { SecretBytes(bytes) }

func bytes(of secret: SecretBytes) -> [UInt8] { secret.withUnsafeBytes { Array($0) } }

/// Every k-element subset of `items`, in order.
func subsets<T>(_ items: [T], size: Int) -> [[T]] {
    guard size > 0 else { return [[]] }
    guard items.count >= size else { return [] }
    var result = [[T]]()
    for (index, item) in items.enumerated() {
        for rest in subsets(Array(items[(index + 1)...]), size: size - 1) { result.append([item] + rest) }
    }
    return result
}

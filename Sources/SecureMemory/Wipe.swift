#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Zeroes `buffer` so the optimiser cannot drop the stores as dead before the memory is released
/// (or freed): for ``SecretBytes``, PKCS#11 attribute scratch and scratch buffers that held
/// feature-derived values. The one wipe in Custos.
public func wipe(_ buffer: UnsafeMutableRawBufferPointer) {
    guard let base = buffer.baseAddress, buffer.count > 0 else { return }
    #if canImport(Darwin)
    _ = memset_s(base, buffer.count, 0, buffer.count)
    #else
    explicit_bzero(base, buffer.count)
    #endif
}

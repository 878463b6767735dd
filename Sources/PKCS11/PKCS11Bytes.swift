public import SecureMemory

/// Byte sequences the binding accepts as call input without copying them.
public protocol PKCS11Bytes {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: PKCS11Bytes where Element == UInt8 {}
extension ArraySlice: PKCS11Bytes where Element == UInt8 {}
extension SecretBytes: PKCS11Bytes {}

extension PKCS11Bytes {
    /// Lends the bytes as a C pointer that is never NULL: an empty Swift buffer may have a nil
    /// base address, and some modules refuse NULL even with a zero length.
    func withCBytes<R>(_ body: (UnsafeMutablePointer<UInt8>, UInt) throws -> R) rethrows -> R {
        try withUnsafeBytes { raw in
            if let base = raw.baseAddress, raw.count > 0 {
                return try body(UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self)), UInt(raw.count))
            }
            var placeholder: UInt8 = 0
            return try body(&placeholder, 0)
        }
    }
}

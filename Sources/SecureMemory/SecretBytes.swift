#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes that must not leak: PINs, imported key values, key shares.
///
/// The storage is allocated once from pages locked in memory where the system allows it (so it
/// is not swapped to disk; ``LockedPagePool``), wiped when the value is released, and lent out only through
/// ``withUnsafeBytes(_:)``. Its description is redacted, and `==` takes the same time
/// wherever the first difference lies.
public final class SecretBytes: @unchecked Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    // SAFETY: `storage` is written only during `init` and wiped in `deinit`; in between it is
    // read-only, so sharing the instance across threads cannot race.
    private let storage: UnsafeMutableRawBufferPointer
    /// Where the bytes live: a slot of ``LockedPagePool`` (nil only if the system refused to map
    /// one, and then a heap buffer, unlocked).
    private let allocation: LockedPagePool.Allocation?

    /// The number of secret bytes.
    public var count: Int { storage.count }

    /// Whether the bytes' pages are locked in memory (not swapped to disk).
    public var isLocked: Bool { allocation?.locked ?? false }

    /// Copies `bytes` into protected storage. The caller should wipe its own copy.
    public convenience init<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        self.init(count: bytes.count) { buffer in
            _ = buffer.initializeMemory(as: UInt8.self, from: bytes)
        }
    }

    /// Allocates `count` bytes and lets `fill` write them in place, so the secret never
    /// exists in an unprotected buffer.
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        // At least one byte: an empty buffer may have a nil base address, and PKCS#11 calls need
        // a non-NULL pointer even for empty data.
        let allocation = LockedPagePool.shared.allocate(count)
        let buffer = allocation?.buffer ?? UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        // A reused slot was wiped by its last owner; the heap's buffer was not.
        if allocation == nil { buffer.initializeMemory(as: UInt8.self, repeating: 0) }
        do {
            try fill(slice)
        } catch {
            Self.release(slice, allocation)
            throw error
        }
        storage = slice
        self.allocation = allocation
    }

    deinit {
        Self.release(storage, allocation)
    }

    /// Wipes every byte `fill` may have written and hands the memory back.
    private static func release(_ storage: UnsafeMutableRawBufferPointer, _ allocation: LockedPagePool.Allocation?) {
        let whole = UnsafeMutableRawBufferPointer(start: storage.baseAddress, count: max(storage.count, 1))
        wipe(whole)
        if let allocation {
            LockedPagePool.shared.release(allocation, count: storage.count)
        } else {
            whole.deallocate()
        }
    }

    /// Lends the bytes for the duration of `body`. Do not let the pointer escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(storage))
    }

    /// Compares in time that depends only on the lengths.
    public static func == (lhs: SecretBytes, rhs: SecretBytes) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in 0..<lhs.count {
            difference |= lhs.storage[index] ^ rhs.storage[index]
        }
        return difference == 0
    }

    public var description: String { "SecretBytes(<redacted>, \(count) bytes)" }
    public var debugDescription: String { description }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Where ``SecretBytes`` keep their bytes: pages locked in memory once and reused.
///
/// Locking each secret's own heap buffer (`mlock` at allocation, `munlock` at release) had two
/// faults. Locks do not stack, and the heap packs small buffers into shared pages, so
/// releasing one secret unlocked the page of every other secret on it — a live PIN or key share
/// could be swapped out after an unrelated release. And the two system calls per secret (each
/// takes the address space's lock for writing) were about a tenth of the service's CPU per
/// Verify, which holds several feature-derived secrets per call.
///
/// So secrets up to ``largestSlot`` come from slots carved out of 64 KiB chunks mapped for this
/// purpose alone, locked when mapped, excluded from core dumps, and never unlocked: a released
/// slot, already wiped by its owner, goes back to a free list of its size class (powers of two
/// from 64 bytes). Larger secrets get a mapping of their own, unmapped on release (which also
/// unlocks exactly their pages). What stays mapped is the peak of what was live at once, not the
/// total ever allocated.
enum LockedPages {
    static let smallestSlot = 64
    static let largestSlot = 64 * 1024
    static let chunkSize = 64 * 1024

    /// A slot or mapping, and whether its pages are locked (locking fails past
    /// `RLIMIT_MEMLOCK`; the memory is then used unlocked, as the system allows).
    struct Allocation {
        let buffer: UnsafeMutableRawBufferPointer
        let locked: Bool
    }

    /// Free slots by size class: addresses (an `Int` keeps the state `Sendable`) and whether the
    /// chunk they came from is locked.
    private static let free = Mutex<[[(address: Int, locked: Bool)]]>(Array(repeating: [], count: sizeClasses))
    private static let sizeClasses = (largestSlot / smallestSlot).trailingZeroBitCount + 1

    /// At least `count` bytes (one, if `count` is 0), zero-filled; nil only when the system
    /// refuses the mapping.
    static func allocate(_ count: Int) -> Allocation? {
        let size = max(count, 1)
        guard size <= largestSlot else { return map(size) }
        let sizeClass = Self.sizeClass(of: size)
        if let slot = free.withLock({ $0[sizeClass].popLast() }) {
            return Allocation(buffer: buffer(slot.address, slotSize(sizeClass)), locked: slot.locked)
        }
        guard let chunk = map(chunkSize) else { return nil }
        let slotSize = slotSize(sizeClass)
        let base = Int(bitPattern: chunk.buffer.baseAddress)
        let rest = stride(from: base + slotSize, to: base + chunkSize, by: slotSize).map { (address: $0, locked: chunk.locked) }
        free.withLock { $0[sizeClass].append(contentsOf: rest) }
        return Allocation(buffer: buffer(base, slotSize), locked: chunk.locked)
    }

    /// Takes back what ``allocate(_:)`` gave for `count` bytes. The caller has wiped it.
    static func release(_ allocation: Allocation, count: Int) {
        let size = max(count, 1)
        guard size <= largestSlot else {
            munmap(allocation.buffer.baseAddress, allocation.buffer.count)
            return
        }
        free.withLock { $0[sizeClass(of: size)].append((Int(bitPattern: allocation.buffer.baseAddress), allocation.locked)) }
    }

    private static func sizeClass(of size: Int) -> Int {
        let rounded = max(smallestSlot, 1 << (Int.bitWidth - (size - 1).leadingZeroBitCount))
        return (rounded / smallestSlot).trailingZeroBitCount
    }

    private static func slotSize(_ sizeClass: Int) -> Int { smallestSlot << sizeClass }

    private static func buffer(_ address: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: count)
    }

    /// Anonymous pages of this process alone (zero-filled by the kernel), locked if the limit
    /// allows, and left out of core dumps where the system knows how.
    private static func map(_ size: Int) -> Allocation? {
        let pages = (size + pageSize - 1) / pageSize * pageSize
        guard let base = mmap(nil, pages, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else { return nil }
        #if canImport(Glibc)
        _ = madvise(base, pages, MADV_DONTDUMP)
        #endif
        let locked = mlock(base, pages) == 0
        return Allocation(buffer: UnsafeMutableRawBufferPointer(start: base, count: pages), locked: locked)
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}

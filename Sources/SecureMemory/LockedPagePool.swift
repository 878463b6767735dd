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
/// takes the address space's lock for writing) were ~5 % of the service's CPU during Verify,
/// which holds several feature-derived secrets per call.
///
/// So secrets up to ``largestSlot`` come from slots carved out of 64 KiB chunks mapped for this
/// purpose alone (aligned to their size, so a slot's address names its chunk), locked when
/// mapped, excluded from core dumps. A released slot, already wiped by its owner, goes back to
/// its chunk; a chunk whose slots are all free is unmapped — which also gives its share of
/// `RLIMIT_MEMLOCK` back — unless it is one of the few spares kept so that calls' secrets do
/// not map and unmap a chunk each time: its size class's only one, or one of at most
/// ``spareChunks`` in all. One spare per class was not enough: a tokenization holds two
/// 64 KiB secrets (the PRF's input and output blocks) while it waits for the HSM, so with calls
/// overlapping every 64 KiB chunk was a spare for a moment and mapped again moments later —
/// 0.6 mappings (each an `mmap`, two `munmap`s, two `madvise`s, an `mlock` of 16 fresh pages and
/// a final `munmap`) per Verify under load. Larger secrets get a mapping of their own,
/// unmapped on release. A page is never unlocked while a secret lives on it.
final class LockedPagePool: Sendable {
    /// The pool every ``SecretBytes`` uses.
    static let shared = LockedPagePool()

    static let smallestSlot = 64
    static let largestSlot = 64 * 1024
    static let chunkSize = 64 * 1024
    static let sizeClasses = (largestSlot / smallestSlot).trailingZeroBitCount + 1
    /// Free chunks kept mapped (each class's only free chunk is kept even past it): at most
    /// 8 + 11 chunks, 1.2 MiB of locked memory, stay mapped after a burst.
    static let spareChunks = 8

    /// A slot or mapping, and whether its pages are locked (locking fails past
    /// `RLIMIT_MEMLOCK` without the privilege to exceed it; the memory is then used unlocked,
    /// as the system allows).
    struct Allocation {
        let buffer: UnsafeMutableRawBufferPointer
        let locked: Bool
    }

    /// Addresses are kept as `Int` so the state is `Sendable`.
    private struct Chunk {
        let sizeClass: Int
        let locked: Bool
        var free: [Int]
        var inUse: Int
    }

    private struct State {
        var chunks: [Int: Chunk] = [:]
        /// Per size class, the chunks with a free slot.
        var open: [Set<Int>] = Array(repeating: [], count: LockedPagePool.sizeClasses)
        /// Chunks with no slot in use.
        var spares = 0
        /// Chunks mapped since the pool began (for tests).
        var chunksMapped = 0
    }

    private let state = Mutex(State())

    init() {}

    /// Chunks mapped now (what a burst leaves behind, for tests).
    var mappedChunks: Int { state.withLock { $0.chunks.count } }

    /// Chunks mapped since the pool began (a burst's reuse, for tests).
    var chunksMapped: Int { state.withLock { $0.chunksMapped } }

    /// At least `count` bytes (one, if `count` is 0), zero-filled; nil only when the system
    /// refuses the mapping.
    func allocate(_ count: Int) -> Allocation? {
        let size = max(count, 1)
        guard size <= Self.largestSlot else { return Self.map(size) }
        let sizeClass = Self.sizeClass(of: size)
        let slotSize = Self.smallestSlot << sizeClass
        if let slot = state.withLock({ Self.take(sizeClass, from: &$0) }) {
            return Allocation(buffer: Self.buffer(slot.address, slotSize), locked: slot.locked)
        }
        guard let chunk = Self.mapChunk() else { return nil }
        let base = Int(bitPattern: chunk.buffer.baseAddress)
        let rest = Array(stride(from: base + slotSize, to: base + Self.chunkSize, by: slotSize))
        state.withLock { state in
            state.chunks[base] = Chunk(sizeClass: sizeClass, locked: chunk.locked, free: rest, inUse: 1)
            state.chunksMapped += 1
            if !rest.isEmpty { state.open[sizeClass].insert(base) }
        }
        return Allocation(buffer: Self.buffer(base, slotSize), locked: chunk.locked)
    }

    /// Takes back what ``allocate(_:)`` gave for `count` bytes. The caller has wiped it.
    func release(_ allocation: Allocation, count: Int) {
        guard max(count, 1) <= Self.largestSlot else {
            munmap(allocation.buffer.baseAddress, allocation.buffer.count)
            return
        }
        let address = Int(bitPattern: allocation.buffer.baseAddress)
        let base = address & ~(Self.chunkSize - 1)
        let emptied = state.withLock { state -> Int? in
            guard var chunk = state.chunks[base] else { preconditionFailure("LockedPagePool: a slot of no chunk was released") }
            chunk.free.append(address)
            chunk.inUse -= 1
            let sizeClass = chunk.sizeClass
            if chunk.inUse == 0 {
                if state.spares >= Self.spareChunks, state.open[sizeClass].contains(where: { $0 != base }) {
                    state.chunks[base] = nil
                    state.open[sizeClass].remove(base)
                    return base
                }
                state.spares += 1
            }
            state.chunks[base] = chunk
            state.open[sizeClass].insert(base)
            return nil
        }
        if let emptied { munmap(UnsafeMutableRawPointer(bitPattern: emptied), Self.chunkSize) }
    }

    /// A free slot of `sizeClass`, from a locked chunk if one has any.
    private static func take(_ sizeClass: Int, from state: inout State) -> (address: Int, locked: Bool)? {
        guard let base = state.open[sizeClass].first(where: { state.chunks[$0]?.locked == true }) ?? state.open[sizeClass].first,
              var chunk = state.chunks[base], let address = chunk.free.popLast() else { return nil }
        if chunk.inUse == 0 { state.spares -= 1 }
        chunk.inUse += 1
        if chunk.free.isEmpty { state.open[sizeClass].remove(base) }
        state.chunks[base] = chunk
        return (address, chunk.locked)
    }

    static func sizeClass(of size: Int) -> Int {
        let rounded = max(smallestSlot, 1 << (Int.bitWidth - (size - 1).leadingZeroBitCount))
        return (rounded / smallestSlot).trailingZeroBitCount
    }

    private static func buffer(_ address: Int, _ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: address), count: count)
    }

    /// A chunk aligned to its size: twice its size mapped, the unaligned ends unmapped.
    private static func mapChunk() -> Allocation? {
        guard let wide = mapPages(2 * chunkSize) else { return nil }
        let start = Int(bitPattern: wide)
        let aligned = (start + chunkSize - 1) & ~(chunkSize - 1)
        if aligned > start { munmap(wide, aligned - start) }
        let end = start + 2 * chunkSize
        if end > aligned + chunkSize { munmap(UnsafeMutableRawPointer(bitPattern: aligned + chunkSize), end - aligned - chunkSize) }
        return protect(UnsafeMutableRawPointer(bitPattern: aligned)!, chunkSize)
    }

    /// A mapping of its own for a secret larger than a chunk's slots.
    private static func map(_ size: Int) -> Allocation? {
        let pages = (size + pageSize - 1) / pageSize * pageSize
        return mapPages(pages).map { protect($0, pages) }
    }

    /// Anonymous pages of this process alone, zero-filled by the kernel.
    private static func mapPages(_ size: Int) -> UnsafeMutableRawPointer? {
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else { return nil }
        return base
    }

    /// Locked if the limit allows, left out of core dumps, and zero in a forked child (the
    /// service does not fork, but a library might: the child gets no copy of these slots; the
    /// HSM library's own heap and plain Swift buffers are not covered).
    private static func protect(_ base: UnsafeMutableRawPointer, _ size: Int) -> Allocation {
        #if canImport(Glibc)
        _ = madvise(base, size, MADV_DONTDUMP)
        _ = madvise(base, size, MADV_WIPEONFORK)
        #endif
        return Allocation(buffer: UnsafeMutableRawBufferPointer(start: base, count: size), locked: mlock(base, size) == 0)
    }

    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
}

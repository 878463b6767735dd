#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import SecureMemory
import Testing

@Suite("SecretBytes: locked pages, reused wiped, never unlocked under a live secret")
struct LockedPagesTests {
    @Test("releasing one secret leaves the page of another locked (locks do not stack)")
    func releaseKeepsNeighbourLocked() throws {
        // Small secrets share pages. Each used to mlock its heap buffer and munlock it on
        // release, which unlocked the whole page, neighbours included.
        var secrets = (0..<64).map { index in SecretBytes(count: 32) { $0.initializeMemory(as: UInt8.self, repeating: UInt8(index)) } }
        let survivor = secrets.removeFirst()
        try #require(survivor.isLocked, "mlock was refused (RLIMIT_MEMLOCK without CAP_IPC_LOCK): nothing to check")
        secrets.removeAll()
        let address = survivor.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        let locked = try #require(Self.lockedKilobytes(ofMappingHolding: address))
        #expect(locked > 0, "the surviving secret's mapping has no locked pages")
        survivor.withUnsafeBytes { #expect($0.allSatisfy { $0 == 0 }) }
    }

    @Test("every new secret starts zeroed, though its slot held another secret before", arguments: [1, 63, 64, 65, 1000, 4096, 16_384, 65_536, 70_000])
    func reusedSlotsStartZeroed(count: Int) {
        for round in 0..<50 {
            let previous = SecretBytes(count: count) { $0.initializeMemory(as: UInt8.self, repeating: 0xA5) }
            #expect(previous.count == count)
            _ = previous
            let next = SecretBytes(count: count) { buffer in
                #expect(buffer.allSatisfy { $0 == 0 }, "round \(round): a reused slot still held bytes")
                buffer.initializeMemory(as: UInt8.self, repeating: 0x5A)
            }
            next.withUnsafeBytes { #expect($0.count == count && $0.allSatisfy { $0 == 0x5A }) }
        }
    }

    @Test("a burst's chunks are unmapped once free (their locked-memory budget given back), but for a few spares")
    func burstGivesChunksBack() {
        // Attack review, session 12: chunks that were never unmapped kept a burst's peak of
        // locked memory for good, and past RLIMIT_MEMLOCK later secrets of other sizes were
        // left unlocked. A pool of its own, so other suites' secrets do not count.
        let pool = LockedPagePool()
        let burst = (0..<100).compactMap { _ in pool.allocate(5_000) }
        #expect(burst.count == 100)
        #expect(Set(burst.map { Int(bitPattern: $0.buffer.baseAddress) }).count == 100, "a slot was handed out twice")
        #expect(pool.mappedChunks == 13, "8 KiB slots, 8 to a 64 KiB chunk: 100 need 13 chunks")
        for allocation in burst { pool.release(allocation, count: 5_000) }
        #expect(pool.mappedChunks == LockedPagePool.spareChunks)
        // A spare serves the next secret of its size without a new mapping.
        let next = pool.allocate(5_000)
        #expect(next != nil && pool.mappedChunks == LockedPagePool.spareChunks && pool.chunksMapped == 13)
        if let next { pool.release(next, count: 5_000) }
        // Slots of 64 B (1 and 64 bytes share it), 128 B, 4 KiB and 64 KiB: each class keeps its
        // one free chunk even past the spares; past 64 KiB a mapping of its own, not a chunk.
        for count in [1, 64, 65, 4_096, 65_536] {
            let allocation = pool.allocate(count)
            #expect(allocation.map { $0.buffer.count >= count } == true)
            if let allocation { pool.release(allocation, count: count) }
        }
        #expect(pool.mappedChunks == LockedPagePool.spareChunks + 4)
        let large = pool.allocate(70_000)
        #expect(large.map { $0.buffer.count >= 70_000 } == true && pool.mappedChunks == LockedPagePool.spareChunks + 4)
        if let large { pool.release(large, count: 70_000) }
    }

    @Test("overlapping calls that each hold two 64 KiB secrets reuse their chunks: no mapping after the first round")
    func overlappingLargeSecretsReuseChunks() {
        // Found by `perf` during Verify: a tokenization holds its PRF input and output blocks
        // (64 KiB each, one chunk each) while it waits for the HSM. With one spare per class,
        // every round of overlapping calls but one chunk's worth mapped again: 0.6 mappings per
        // Verify under load.
        let pool = LockedPagePool()
        let calls = 3
        for _ in 0..<50 {
            let held = (0..<(2 * calls)).compactMap { _ in pool.allocate(65_536) }
            #expect(held.count == 2 * calls)
            for allocation in held { pool.release(allocation, count: 65_536) }
        }
        #expect(pool.chunksMapped == 2 * calls, "chunks mapped again after the first round")
        #expect(pool.mappedChunks == 2 * calls, "kept: \(LockedPagePool.spareChunks) spares at most")
    }

    @Test("secrets live in mappings left out of core dumps and wiped in a forked child", arguments: [32, 70_000])
    func excludedFromDumpsAndForks(count: Int) throws {
        let secret = SecretBytes(count: count) { $0.initializeMemory(as: UInt8.self, repeating: 0xA5) }
        let address = secret.withUnsafeBytes { UInt(bitPattern: $0.baseAddress) }
        let flags = try #require(Self.smapsFields("VmFlags:", ofMappingHolding: address))
        #expect(flags.contains("dd"), "MADV_DONTDUMP: \(flags)")
        #expect(flags.contains("wf"), "MADV_WIPEONFORK: \(flags)")
    }

    @Test("an empty secret still lends a non-NULL pointer (PKCS#11 needs one)")
    func emptySecret() {
        let empty = SecretBytes(count: 0) { _ in }
        #expect(empty.count == 0)
        empty.withUnsafeBytes { #expect($0.baseAddress != nil) }
    }

    @Test("secrets made and released on many threads at once keep their own bytes")
    func concurrentSecretsStayApart() async {
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for task in 0..<16 {
                group.addTask {
                    var wrong = 0
                    for round in 0..<200 {
                        let value = UInt8(truncatingIfNeeded: task &* 31 &+ round)
                        let count = 1 + (task * 97 + round * 13) % 3000
                        let secret = SecretBytes(count: count) { $0.initializeMemory(as: UInt8.self, repeating: value) }
                        await Task.yield()
                        secret.withUnsafeBytes { if !$0.allSatisfy({ $0 == value }) { wrong += 1 } }
                    }
                    return wrong
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
    }

    /// The `Locked:` figure (kB) of the mapping in /proc/self/smaps that holds `address`.
    static func lockedKilobytes(ofMappingHolding address: UInt) -> Int? {
        smapsFields("Locked:", ofMappingHolding: address).flatMap { $0.first.flatMap { Int($0) } }
    }

    /// The values of one line (`Locked:`, `VmFlags:`) of the /proc/self/smaps entry of the
    /// mapping that holds `address`.
    static func smapsFields(_ name: Substring, ofMappingHolding address: UInt) -> [Substring]? {
        // Read to the end: /proc files report a size of 0.
        guard let file = FileHandle(forReadingAtPath: "/proc/self/smaps") else { return nil }
        defer { try? file.close() }
        let smaps = String(decoding: file.readDataToEndOfFile(), as: UTF8.self)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= address && address < bounds[1]
            } else if inside, fields.first == name {
                return Array(fields.dropFirst())
            }
        }
        return nil
    }
}

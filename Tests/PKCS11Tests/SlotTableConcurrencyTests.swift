@testable import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SoftHSM 2.6.1 adds an empty slot inside `C_GetSlotList` (the size query) once every token is
/// initialised, with no lock: two threads asking at once both insert the same slot id, and the
/// second aborts the whole process (`SlotManager::insertToken`, `assert(result.second)`). It
/// aborted a fresh-clone CI run in which several suites started pools while another initialised a
/// token. The binding serialises slot-table calls; without that, this test kills the test process.
@Suite("Slot table: concurrent slot-list queries after a token is initialised", .serialized)
struct SlotTableConcurrencyTests {
    @Test("Threads released together after each C_InitToken all get one consistent slot list with exactly one free slot")
    func concurrentQueriesAfterInitialisation() throws {
        // A module copy of its own, so its slot table is touched by this test alone.
        let module = try TestToken.isolatedModule()
        try module.initialize()
        let threads = 4
        // The copy has a slot table of its own but reads the process's token folder, where other
        // suites make and remove tokens meanwhile: a token removed under it answers
        // CKR_GENERAL_ERROR (seen under load). Only the free slot is this test's to ask about.
        func isFree(_ slot: SlotID) -> Bool { (try? module.tokenInfo(slot: slot))?.isInitialized == false }
        for round in 0..<12 {
            let free = try #require(try module.slots().first(where: isFree))
            try module.initToken(slot: free, securityOfficerPIN: SecretBytes(Array("so-pin-\(round)-slot".utf8)), label: "slot-race-\(round)")
            // Every token is initialised now: the next size query is the one that inserts.
            let race = Race()
            // Real threads, released together by a spin barrier (a dispatch pool may run fewer
            // at once than asked, and the barrier would then never open).
            let started = try (0..<threads).map { _ in
                try startThread(name: "slot-race") {
                    race.arrived.add(1, ordering: .acquiringAndReleasing)
                    while race.arrived.load(ordering: .acquiring) < threads {}
                    do {
                        let slots = try module.slots()
                        race.lists.withLock { $0.append(slots) }
                    } catch {
                        race.failures.withLock { $0.append("\(error)") }
                    }
                }
            }
            for thread in started { pthread_join(thread, nil) }
            #expect(race.failures.withLock { $0 }.isEmpty, "round \(round)")
            let all = race.lists.withLock { $0 }
            #expect(all.count == threads)
            #expect(Set(all.map { $0.sorted { $0.rawValue < $1.rawValue } }).count == 1, "round \(round): every thread saw the same slots")
            let slots = try module.slots()
            #expect(Set(slots).count == slots.count, "round \(round): slot ids are unique")
            let uninitialised = slots.filter(isFree)
            #expect(uninitialised.count == 1, "round \(round): exactly one free slot")
        }
    }
}

/// What the threads of one round share.
private final class Race: Sendable {
    let arrived = Atomic<Int>(0)
    let lists = Mutex([[SlotID]]())
    let failures = Mutex([String]())
}


import Custody
import CustosModel
import Foundation
import Synchronization
import Testing

@Suite("API-key cache: a revocation notice that arrives during a row read wins")
struct APIKeyCacheRaceTests {
    /// Lets the read hook reach the instance it is part of, once that exists.
    final class Interleaving: Sendable {
        let armed = Atomic<Bool>(true)
        let reader = Mutex<APIKeyService?>(nil)
        let revoker = Mutex<(@Sendable () async throws -> Void)?>(nil)
        let noticeSeen = Atomic<Bool>(false)
    }

    @Test("A row read before a revocation NOTIFY and cached after it does not keep the key valid")
    func readBeforeNoticeCachedAfter() async throws {
        let harness = try await CustodyHarness.make("keyrace")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        let interleaving = Interleaving()
        // Instance A caches; the revocation comes from the harness's instance, so only A's
        // listener (the NOTIFY) can tell A about it.
        let databaseA = try harness.secondServiceDatabase()
        let keyringA = TenantKeyring(pool: harness.pool, database: databaseA, audit: harness.audit, logger: harness.logs.logger)
        let instanceA = APIKeyService(
            pool: harness.pool, database: databaseA, keyring: keyringA, audit: harness.audit, environment: "test", logger: harness.logs.logger,
            rowReadHook: { _ in
                // First read only: between the database read and the cache insert, the key is
                // revoked elsewhere and A's listener receives the notice.
                guard interleaving.armed.exchange(false, ordering: .acquiringAndReleasing),
                      let reader = interleaving.reader.withLock({ $0 }), let revoke = interleaving.revoker.withLock({ $0 }) else { return }
                let before = reader.cacheGeneration
                try? await revoke()
                for _ in 0..<1_000 where reader.cacheGeneration == before { try? await Task.sleep(for: .milliseconds(10)) }
                interleaving.noticeSeen.store(reader.cacheGeneration != before, ordering: .releasing)
            }
        )
        interleaving.reader.withLock { $0 = instanceA }
        interleaving.revoker.withLock { $0 = { _ = try await harness.apiKeys.revoke(tenant: tenant.id, keyID: issued.keyID, actor: "officer") } }
        let listener = Task { await instanceA.runRevocationListener() }
        for _ in 0..<500 where !instanceA.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(instanceA.isListening)

        // The first verification read the row before the revocation: it may answer either way.
        _ = try? await instanceA.verify(issued.key)
        let noticeSeen = interleaving.noticeSeen.load(ordering: .acquiring)
        #expect(noticeSeen, "the revocation notice reached A during the read")
        // What it must not do is leave the pre-revocation row in A's cache.
        await #expect(throws: APIKeyError.invalid) { _ = try await instanceA.verify(issued.key) }
        #expect(instanceA.isListening, "the refusal came from the database row, with the cache in use")

        listener.cancel()
        await listener.value
        await databaseA.shutdown()
        await harness.shutdown()
    }
}

import Custody
import CustosModel
import Foundation
import HSM
import SecureMemory
import Storage
import Testing

@Suite("API keys")
struct APIKeyServiceTests {
    @Test("Issue, verify, scopes; unknown, revoked, expired and wrong keys all get the same answer")
    func lifecycle() async throws {
        let harness = try await CustodyHarness.make("apikeys")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: ["verify", "enrol"], label: "ats", actor: "officer")
        let text = String(decoding: issued.key.withUnsafeBytes { Array($0) }, as: UTF8.self)
        #expect(text.hasPrefix("custos_test_\(issued.keyID)_"))
        let verified = try await harness.apiKeys.verify(issued.key)
        #expect(verified.tenant == tenant.id && verified.keyID == issued.keyID && verified.scopes == ["verify", "enrol"])

        // A well-formed key that was never issued (valid checksum, unknown id).
        let stranger = try APIKeyFormat.make(environment: "test", keyID: [1, 2, 3, 4, 5, 6, 7, 8], secret: SecretBytes([UInt8](repeating: 9, count: 32)))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(stranger) }
        // The right id with another secret.
        let forged = try APIKeyFormat.make(environment: "test", keyID: Base62.decode(issued.keyID, byteCount: 8)!, secret: SecretBytes([UInt8](repeating: 7, count: 32)))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(forged) }
        // Expired.
        let expired = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], expiresAt: Date().addingTimeInterval(-1), actor: "officer")
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(expired.key) }
        // Revoked.
        #expect(try await harness.apiKeys.revoke(tenant: tenant.id, keyID: issued.keyID, actor: "officer"))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        // Another tenant cannot revoke (or see) this tenant's keys.
        let other = try await harness.keyring.createTenant(label: "globex", actor: "officer")
        let live = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        #expect(try await harness.apiKeys.revoke(tenant: other.id, keyID: live.keyID, actor: "mallory") == false)
        #expect(try await harness.apiKeys.list(tenant: other.id).isEmpty)
        #expect(try await harness.apiKeys.verify(live.key).tenant == tenant.id)
        // The listing never holds a secret, nor does any log line.
        let listed = try await harness.apiKeys.list(tenant: tenant.id)
        #expect(listed.count == 3)
        #expect(!"\(listed)".contains(text))
        #expect(!harness.logs.text.contains(text) && !harness.logs.text.contains(String(text.suffix(49))))
        // A disabled tenant's keys are refused like unknown ones, and accepted again once re-enabled.
        #expect(try await harness.keyring.setTenantActive(tenant.id, false, actor: "officer"))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(live.key) }
        #expect(try await harness.keyring.setTenantActive(tenant.id, true, actor: "officer"))
        #expect(try await harness.apiKeys.verify(live.key).tenant == tenant.id)
        await harness.shutdown()
    }

    @Test("A typo is rejected by the checksum without touching the database or the HSM")
    func typoNeedsNoIO() async throws {
        let harness = try await CustodyHarness.make("typo")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        var bytes = issued.key.withUnsafeBytes { Array($0) }
        bytes[bytes.count - 10] = bytes[bytes.count - 10] == UInt8(ascii: "a") ? UInt8(ascii: "b") : UInt8(ascii: "a")
        // Both the HSM and the database are gone: a malformed key must still get its answer.
        await harness.pool.shutdown()
        await harness.service.shutdown()
        do {
            _ = try await harness.apiKeys.verify(SecretBytes(bytes))
            Issue.record("a typo'd key verified")
        } catch let error as APIKeyError {
            guard case .malformed = error else { Issue.record("got \(error)"); return }
            #expect(!error.description.contains(String(decoding: bytes, as: UTF8.self)))
        }
        await harness.shutdown()
    }

    @Test("After a pepper rotation old keys verify and are re-hashed under the new version")
    func pepperRotation() async throws {
        let harness = try await CustodyHarness.make("pepper")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        let before = try await harness.apiKeys.list(tenant: tenant.id).first!
        #expect(before.pepperVersion == 1)
        try await harness.keyring.rotate(tenant.id, .apiKeyPepper, actor: "officer")
        #expect(try await harness.apiKeys.verify(issued.key).keyID == issued.keyID)
        let after = try await harness.apiKeys.list(tenant: tenant.id).first!
        #expect(after.pepperVersion == 2)
        #expect(after.hash != before.hash)
        #expect(try await harness.apiKeys.verify(issued.key).keyID == issued.keyID)
        await harness.shutdown()
    }

    @Test("After a pepper rotation: --stale lists live keys under the old pepper; revoked and expired keys neither list nor keep the old version alive")
    func stalePepper() async throws {
        let harness = try await CustodyHarness.make("pepperstale")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let dormant = try await harness.apiKeys.issue(tenant: tenant, scopes: [], label: "dormant", actor: "officer")
        let expired = try await harness.apiKeys.issue(tenant: tenant, scopes: [], label: "expired", expiresAt: Date().addingTimeInterval(3600), actor: "officer")
        let revoked = try await harness.apiKeys.issue(tenant: tenant, scopes: [], label: "revoked", actor: "officer")
        let used = try await harness.apiKeys.issue(tenant: tenant, scopes: [], label: "used", actor: "officer")
        #expect(try await harness.apiKeys.stale(tenant: tenant).isEmpty, "nothing is stale before a rotation")

        try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
        _ = try await harness.apiKeys.verify(used.key)   // re-hashed under v2
        _ = try await harness.apiKeys.revoke(tenant: tenant, keyID: revoked.keyID, actor: "officer")
        #expect(Set(try await harness.apiKeys.stale(tenant: tenant).map(\.keyID)) == [dormant.keyID, expired.keyID])
        try await harness.ownerSQL(tenant: tenant, "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = \(expired.keyID)")
        #expect(try await harness.apiKeys.stale(tenant: tenant).map(\.keyID) == [dormant.keyID], "an expired key never verifies again")

        do {
            try await harness.keyring.destroy(tenant, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
            Issue.record("destroyed a pepper version that a live, dormant API key still needs")
        } catch let error as CustodyError {
            guard case .stillNeeded(_, _, 1, let reason) = error else { Issue.record("got \(error)"); return }
            #expect(reason.hasPrefix("1 stored"), "only the dormant key counts: \(reason)")
        }
        _ = try await harness.apiKeys.revoke(tenant: tenant, keyID: dormant.keyID, actor: "officer")
        #expect(try await harness.apiKeys.stale(tenant: tenant).isEmpty)
        try await harness.keyring.destroy(tenant, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 }?.state == .destroyed)
        await harness.shutdown()
    }

    @Test("A key the HSM confirmed is accepted from memory: that key only, and never once it is revoked (here or elsewhere) or its tenant flushed")
    func verifiedKeyCache() async throws {
        let harness = try await CustodyHarness.make("verified")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        let second = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        // Instance B remembers verified keys (its listener runs); revocations come from the
        // harness's instance, so only B's listener can tell B of them.
        let databaseB = try harness.secondServiceDatabase()
        let keyringB = TenantKeyring(pool: harness.pool, database: databaseB, audit: harness.audit, logger: harness.logs.logger)
        let instanceB = APIKeyService(
            pool: harness.pool, database: databaseB, keyring: keyringB, audit: harness.audit, environment: "test", logger: harness.logs.logger,
            verifiedLifetime: .seconds(600)
        )
        let listener = Task { await instanceB.runRevocationListener() }
        defer { listener.cancel() }
        for _ in 0..<500 where !instanceB.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(instanceB.isListening)
        func bearer(_ key: SecretBytes) -> Substring.UTF8View { Substring(String(decoding: key.withUnsafeBytes { Array($0) }, as: UTF8.self)).utf8 }
        /// Verifies `key` until a verification is answered from memory. Suites running in
        /// parallel share the notice channel, and each of their revocations and flushes empties
        /// B's cache too, so one repeat may not be enough; a few always are.
        func verifyUntilRemembered(_ key: SecretBytes, _ keyID: String) async throws -> Bool {
            for _ in 0..<20 {
                let hits = instanceB.verifiedCacheHits
                #expect(try await instanceB.verify(key).keyID == keyID)
                if instanceB.verifiedCacheHits == hits + 1, instanceB.isRecentlyVerified(bearer: bearer(key)) { return true }
            }
            return false
        }

        // The first verification runs the HMAC; a repeat is answered from memory.
        #expect(!instanceB.isRecentlyVerified(bearer: bearer(issued.key)))
        #expect(try await instanceB.verify(issued.key).keyID == issued.keyID)
        #expect(instanceB.verifiedCacheHits == 0)
        #expect(try await verifyUntilRemembered(issued.key, issued.keyID))
        // Another secret under the same key id is not the key the HSM confirmed.
        let forged = try APIKeyFormat.make(environment: "test", keyID: Base62.decode(issued.keyID, byteCount: 8)!, secret: SecretBytes([UInt8](repeating: 7, count: 32)))
        #expect(!instanceB.isRecentlyVerified(bearer: bearer(forged)))
        let hitsBeforeForged = instanceB.verifiedCacheHits
        await #expect(throws: APIKeyError.invalid) { _ = try await instanceB.verify(forged) }
        #expect(instanceB.verifiedCacheHits == hitsBeforeForged)

        // Revoked by another instance: refused as soon as B has the notice, never from memory.
        #expect(try await harness.apiKeys.revoke(tenant: tenant.id, keyID: issued.keyID, actor: "officer"))
        for _ in 0..<1_000 where instanceB.isRecentlyVerified(bearer: bearer(issued.key)) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!instanceB.isRecentlyVerified(bearer: bearer(issued.key)), "the revocation notice reached B and emptied its entry")
        await #expect(throws: APIKeyError.invalid) { _ = try await instanceB.verify(issued.key) }

        // Revoked by B itself: refused on the next call, without waiting for any notice.
        #expect(try await instanceB.verify(second.key).keyID == second.keyID)
        #expect(try await verifyUntilRemembered(second.key, second.keyID))
        #expect(try await instanceB.revoke(tenant: tenant.id, keyID: second.keyID, actor: "officer"))
        #expect(!instanceB.isRecentlyVerified(bearer: bearer(second.key)))
        await #expect(throws: APIKeyError.invalid) { _ = try await instanceB.verify(second.key) }

        // A disabled tenant's flush forgets its verified keys too.
        let third = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        #expect(try await instanceB.verify(third.key).keyID == third.keyID)
        #expect(try await verifyUntilRemembered(third.key, third.keyID))
        #expect(try await harness.keyring.setTenantActive(tenant.id, false, actor: "officer"))
        for _ in 0..<1_000 where instanceB.isRecentlyVerified(bearer: bearer(third.key)) { try await Task.sleep(for: .milliseconds(10)) }
        #expect(!instanceB.isRecentlyVerified(bearer: bearer(third.key)), "the flush reached B and emptied its cache")
        await #expect(throws: APIKeyError.invalid) { _ = try await instanceB.verify(third.key) }

        // With the listener gone nothing is remembered (fail closed), and a zero lifetime
        // remembers nothing either: every verification runs the HMAC.
        listener.cancel()
        await listener.value
        #expect(try await harness.keyring.setTenantActive(tenant.id, true, actor: "officer"))
        let hits = instanceB.verifiedCacheHits
        #expect(try await instanceB.verify(third.key).keyID == third.keyID)
        #expect(try await instanceB.verify(third.key).keyID == third.keyID)
        #expect(instanceB.verifiedCacheHits == hits)
        let instanceC = APIKeyService(
            pool: harness.pool, database: databaseB, keyring: keyringB, audit: harness.audit, environment: "test", logger: harness.logs.logger,
            verifiedLifetime: .zero
        )
        let listenerC = Task { await instanceC.runRevocationListener() }
        for _ in 0..<500 where !instanceC.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(instanceC.isListening)
        for _ in 0..<3 { #expect(try await instanceC.verify(third.key).keyID == third.keyID) }
        #expect(instanceC.verifiedCacheHits == 0)
        #expect(!instanceC.isRecentlyVerified(bearer: bearer(third.key)))
        listenerC.cancel()
        await listenerC.value
        await databaseB.shutdown()
        await harness.shutdown()
    }

    @Test("A revocation reaches a second instance through LISTEN/NOTIFY")
    func revocationReachesSecondInstance() async throws {
        let harness = try await CustodyHarness.make("notify")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        // Instance B: its own database client, keyring and listener (same HSM token and schema).
        let databaseB = try harness.secondServiceDatabase()
        let keyringB = TenantKeyring(pool: harness.pool, database: databaseB, audit: harness.audit, logger: harness.logs.logger)
        let instanceB = APIKeyService(pool: harness.pool, database: databaseB, keyring: keyringB, audit: harness.audit, environment: "test", logger: harness.logs.logger)
        let listener = Task { await instanceB.runRevocationListener() }
        defer { listener.cancel() }
        for _ in 0..<500 where !instanceB.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(instanceB.isListening)
        // B verifies once, so the row sits in its cache.
        #expect(try await instanceB.verify(issued.key).tenant == tenant.id)
        #expect(try await harness.apiKeys.revoke(tenant: tenant.id, keyID: issued.keyID, actor: "officer"))
        let revokedAt = ContinuousClock.now
        var refused = false
        // A generous wait: the delay itself is a benchmark figure (scripts/bench custody), not an assertion.
        while !refused, ContinuousClock.now - revokedAt < .seconds(10) {
            do {
                _ = try await instanceB.verify(issued.key)
                try await Task.sleep(for: .milliseconds(5))
            } catch APIKeyError.invalid {
                refused = true
            }
        }
        #expect(refused)
        listener.cancel()
        await listener.value
        #expect(!instanceB.isListening, "with the listener gone the cache is off (fail closed)")
        await databaseB.shutdown()
        await harness.shutdown()
    }
}

import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Synchronization
import Testing

/// The pool's bounded key cache on a real SoftHSM token: session objects (imported here like
/// unwrapped tenant keys are) stay within `maxCachedKeys`, least recently used go first, and
/// eviction never pulls an object from under a running call.
@Suite("Key cache bound")
struct KeyCacheBoundTests {
    /// Known HMAC keys whose resolver counts how often it ran (once per miss).
    struct CountedKeys {
        let known: [KnownHMACKey]
        let keys: [HSMKey]
        let resolutions: [Tally]

        init(_ count: Int) {
            known = (0..<count).map { KnownHMACKey(name: "k\($0)", seed: UInt8($0 * 7 + 1)) }
            resolutions = (0..<count).map { _ in Tally() }
            keys = zip(known, resolutions).map { known, tally in
                HSMKey(id: known.key.id) { session in
                    tally.add()
                    return try known.key.resolve(in: session)
                }
            }
        }

        var counts: [Int] { resolutions.map(\.value) }
    }

    private func pool(_ token: TestToken, workers: Int, maxCachedKeys: Int) async throws -> SessionPool {
        var configuration = token.configuration(workers: workers)
        configuration.maxCachedKeys = maxCachedKeys
        let pool = try SessionPool(configuration: configuration, logger: .init(label: "test"))
        try await pool.start()
        return pool
    }

    /// Every session object on the token, counted by the token itself (`CKA_TOKEN` false).
    private func sessionObjects(_ pool: SessionPool) async throws -> Int {
        try await pool.withSession { session in try session.pkcs11.findObjects([.token(false)], limit: 10_000).count }
    }

    @discardableResult
    private func use(_ pool: SessionPool, _ keys: CountedKeys, _ index: Int, _ data: [UInt8] = message(0, 0)) async throws -> Bool {
        try await pool.hmacSHA256(key: keys.keys[index], data: data) == keys.known[index].expected(data)
    }

    @Test("A pool of no worker, or of more than 256 (each a thread: a refused thread stopped the process), is a configuration error; 256 starts")
    func workersBounded() async throws {
        let token = try TestToken.make("workers")
        for workers in [0, HSMConfiguration.maximumWorkers + 1, .max] {
            #expect(throws: HSMError.self, "\(workers) workers") {
                _ = try SessionPool(configuration: token.configuration(workers: workers), logger: .init(label: "test"))
            }
        }
        let pool = try SessionPool(configuration: token.configuration(workers: HSMConfiguration.maximumWorkers), logger: .init(label: "test"))
        try await pool.start()
        #expect(try await pool.withSession { _ in true })
        await pool.shutdown()
    }

    @Test("A cache of 3 evicts the least recently used key and destroys its session object")
    func evictsLeastRecentlyUsed() async throws {
        let token = try TestToken.make("lru")
        let pool = try await pool(token, workers: 1, maxCachedKeys: 3)
        let keys = CountedKeys(4)
        for index in [0, 1, 2, 0] { #expect(try await use(pool, keys, index)) }
        // k1 is now the least recently used: k3 takes its place.
        #expect(try await use(pool, keys, 3))
        #expect(try await sessionObjects(pool) == 3)
        for index in [0, 2, 3] { #expect(try await use(pool, keys, index)) }
        #expect(keys.counts == [1, 1, 1, 1])
        // k1 comes back through a fresh resolve, evicting k0 (used before k2 and k3).
        #expect(try await use(pool, keys, 1))
        #expect(keys.counts == [1, 2, 1, 1])
        #expect(try await use(pool, keys, 0))
        #expect(keys.counts == [2, 2, 1, 1])
        #expect(try await sessionObjects(pool) == 3)
        #expect(pool.statistics.cachedSessionObjects == 3)
        await pool.shutdown()
    }

    @Test("Twice as many keys as the cache, cycled: every result identical after re-resolving")
    func evictedKeysComputeTheSame() async throws {
        let token = try TestToken.make("cycle")
        let pool = try await pool(token, workers: 2, maxCachedKeys: 4)
        let keys = CountedKeys(8)
        var wrong = 0
        for round in 0..<5 {
            for index in 0..<8 {
                if try await !use(pool, keys, index, message(round, index)) { wrong += 1 }
            }
        }
        #expect(wrong == 0)
        // Cycling through twice the cache misses every time.
        #expect(keys.counts.reduce(0, +) == 40)
        #expect(try await sessionObjects(pool) <= 4)
        await pool.shutdown()
    }

    @Test("Many tasks on four workers under eviction pressure: no call fails, every result correct, the bound holds")
    func concurrentUseUnderEviction() async throws {
        let token = try TestToken.make("pressure")
        let pool = try await pool(token, workers: 4, maxCachedKeys: 6)
        let keys = CountedKeys(16)
        let wrong = Tally(), peak = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<64 {
                group.addTask {
                    for index in 0..<40 {
                        let key = (task * 7 + index * 3) % 16
                        if try await !use(pool, keys, key, message(task, index)) { wrong.add() }
                        let held = pool.statistics.cachedSessionObjects
                        if held > 6 { peak.note("\(held)") }
                    }
                }
            }
            // Some tasks prefer the executor, so their calls run inline on the workers.
            for task in 64..<96 {
                group.addTask(executorPreference: pool.executor) {
                    for index in 0..<40 {
                        let key = (task * 5 + index) % 16
                        if try await !use(pool, keys, key, message(task, index)) { wrong.add() }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(wrong.value == 0)
        #expect(peak.lines.isEmpty)
        #expect(keys.counts.reduce(0, +) > 16)
        #expect(try await sessionObjects(pool) <= 6)
        await pool.shutdown()
    }

    @Test("After a re-login the cache starts a new generation: keys resolve again, nothing stale is destroyed")
    func generationBumpAfterRelogin() async throws {
        let token = try TestToken.make("regen")
        let pool = try await pool(token, workers: 2, maxCachedKeys: 2)
        let keys = CountedKeys(3)
        for index in [0, 1] { #expect(try await use(pool, keys, index)) }
        let generation = pool.statistics.generation
        try await pool.relogin()
        #expect(pool.statistics.generation > generation)
        // The logout took the session objects; the old handles are forgotten, not destroyed.
        for index in [0, 1, 2, 0] { #expect(try await use(pool, keys, index)) }
        #expect(keys.counts == [3, 2, 1])
        #expect(try await sessionObjects(pool) == 2)
        #expect(pool.statistics.cachedSessionObjects == 2)
        await pool.shutdown()
    }

    @Test("A discarded key's session object is destroyed at once and leaves the cache (its place too); the key resolves again on its next use")
    func discardDestroysAtOnce() async throws {
        let token = try TestToken.make("discard")
        let pool = try await pool(token, workers: 1, maxCachedKeys: 2)
        let keys = CountedKeys(3)
        for index in [0, 1] { #expect(try await use(pool, keys, index)) }
        #expect(try await sessionObjects(pool) == 2)
        #expect(try await pool.discard([keys.keys[0], keys.keys[0]]) == 1)
        #expect(try await sessionObjects(pool) == 1, "destroyed at once, not at the next logout")
        // Its place is free: k2 fits without evicting k1, and k0 is made again on its next use.
        #expect(try await use(pool, keys, 2))
        #expect(try await use(pool, keys, 1))
        #expect(keys.counts == [1, 1, 1], "k1 was not evicted to make room")
        #expect(try await use(pool, keys, 0))
        #expect(keys.counts == [2, 1, 1])
        #expect(try await sessionObjects(pool) == 2, "the bound holds after a discard")
        await pool.shutdown()
    }

    @Test("A token object resolved through the pool is outside the bound and never destroyed")
    func tokenObjectsAreNotEvicted() async throws {
        let token = try TestToken.make("tokenobj")
        let label = "test/permanent-hmac"
        let known = KnownHMACKey(name: "permanent", seed: 0x99)
        let setup = try token.userSession()
        _ = try setup.createObject([
            .class(.secretKey), .keyType(.genericSecret), .token(true), .private(true), .sensitive(true),
            .extractable(false), .sign(true), .label(label), .value(SecretBytes(known.bytes)),
        ])
        try setup.close()
        let pool = try await pool(token, workers: 1, maxCachedKeys: 1)
        let permanent = HSMKey.tokenObject(label: label)
        let keys = CountedKeys(3)
        let data = message(1, 1)
        for round in 0..<3 {
            #expect(try await pool.hmacSHA256(key: permanent, data: data) == known.expected(data))
            for index in 0..<3 { #expect(try await use(pool, keys, index, message(round, index))) }
        }
        let found = try await pool.withSession { session in try session.pkcs11.findObjects([.label(label)]).count }
        #expect(found == 1)
        #expect(pool.statistics.cachedSessionObjects == 1)
        #expect(try await sessionObjects(pool) == 1)
        await pool.shutdown()
    }
}

#if canImport(Glibc)
import Glibc
#endif
import HSM
import HSMTestSupport
import PKCS11
import Synchronization
import Testing

@Suite("Session pool")
struct SessionPoolTests {
    @Test("Hundreds of tasks, thousands of HMACs through the pool: every result correct", arguments: TestBackend.allCases)
    func concurrentOperationsAreCorrect(_ backend: TestBackend) async throws {
        let (token, module) = try backend.isolatedToken("pool")
        let pool = try await startedPool(token, module: module)
        let known = KnownHMACKey()
        let wrong = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<200 {
                group.addTask {
                    for index in 0..<20 {
                        let data = message(task, index)
                        let mac = try await pool.hmacSHA256(key: known.key, data: data)
                        if mac != known.expected(data) { wrong.add() }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(wrong.value == 0)
        #expect(pool.statistics.cachedKeys == 1)
        await pool.shutdown()
    }

    @Test("Tasks that prefer the pool's executor run their HSM calls inline, with the same results")
    func executorPreference() async throws {
        let token = try TestToken.make("exec")
        let pool = try await startedPool(token)
        let known = KnownHMACKey()
        let wrong = Tally()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<100 {
                group.addTask(executorPreference: pool.executor) {
                    for index in 0..<20 {
                        let data = message(task, index)
                        if try await pool.hmacSHA256(key: known.key, data: data) != known.expected(data) {
                            wrong.add()
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(wrong.value == 0)
        await pool.shutdown()
    }

    @Test("Several HMACs in one round trip: each under its own key, in order; a key the token lacks fails them all")
    func hmacBatch() async throws {
        let token = try TestToken.make("batch")
        let pool = try await startedPool(token)
        let first = KnownHMACKey(), second = KnownHMACKey(name: "second", seed: 0x17)
        let messages = (0..<5).map { message(3, $0) }
        let macs = try await pool.hmacSHA256(messages.enumerated().map { ($0.offset.isMultiple(of: 2) ? first.key : second.key, $0.element) })
        #expect(macs == messages.enumerated().map { $0.offset.isMultiple(of: 2) ? first.expected($0.element) : second.expected($0.element) })
        let missing = HSMKey.tokenObject(label: "custos/test/absent")
        let error = await #expect(throws: HSMError.self) {
            try await pool.hmacSHA256([(first.key, messages[0]), (missing, messages[1])])
        }
        guard case .keyNotFound = error else { Issue.record("expected keyNotFound, got \(String(describing: error))"); return }
        #expect(try await pool.hmacSHA256([]).isEmpty)
        await pool.shutdown()
    }

    @Test("More waiters than sessions with a tiny timeout: the typed exhausted error, then a healthy pool")
    func exhaustion() async throws {
        let token = try TestToken.make("exhaust")
        let pool = try await startedPool(token, workers: 2, acquireTimeout: .milliseconds(30))
        let known = KnownHMACKey()
        _ = try await pool.hmacSHA256(key: known.key, data: [1])
        let outcomes = Tally()
        let holding = Tally()
        await withTaskGroup(of: Void.self) { group in
            // Two bodies hold both sessions for 2 s (the watchdog's slack on a loaded machine: CI
            // once scheduled it only after 400 ms)…
            for _ in 0..<2 {
                group.addTask {
                    _ = try? await pool.withSession { _ in
                        holding.add()
                        usleep(2_000_000)
                    }
                }
            }
            // …and once both hold one, five more requests may wait 30 ms at most.
            while holding.value < 2 { try? await Task.sleep(for: .milliseconds(2)) }
            for _ in 0..<5 {
                group.addTask {
                    do {
                        _ = try await pool.hmacSHA256(key: known.key, data: [2])
                        outcomes.note("ok")
                    } catch let error as HSMError {
                        if case .exhausted(let waited, let maxSessions) = error, maxSessions == 2, waited >= 30_000_000 {
                            outcomes.note("exhausted")
                        } else {
                            outcomes.note("\(error)")
                        }
                    } catch {
                        outcomes.note("\(error)")
                    }
                }
            }
        }
        #expect(outcomes.lines == Array(repeating: "exhausted", count: 5))
        #expect(HSMError.exhausted(waitedNanoseconds: 1, maxSessions: 2).isRetryable)
        // Healthy afterwards.
        let data = message(7, 7)
        #expect(try await pool.hmacSHA256(key: known.key, data: data) == known.expected(data))
        await pool.shutdown()
    }

    @Test("Typed operations: GCM round trip, ECB PRF, Ed25519, random, wrap")
    func typedOperations() async throws {
        let token = try TestToken.make("typed")
        let pool = try await startedPool(token)
        let dataKey = HSMKey(id: "test:data") { session in
            try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptDecrypt) + [.valueLength(32)])
        }
        let box = try await pool.sealAESGCM(key: dataKey, plaintext: Array("ada@example.org".utf8), additionalData: [9])
        #expect(box.nonce.count == 12)
        #expect(try await pool.openAESGCM(key: dataKey, box: box, additionalData: [9]) == Array("ada@example.org".utf8))
        await #expect(throws: HSMError.self) { _ = try await pool.openAESGCM(key: dataKey, box: box, additionalData: [8]) }

        let prfKey = HSMKey(id: "test:prf") { session in
            try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptOnly) + [.valueLength(32)])
        }
        let blocks = [UInt8](repeating: 7, count: 1024 * 16)
        let first = try await pool.encryptBlocksECB(key: prfKey, blocks: blocks)
        #expect(first.count == blocks.count)
        #expect(try await pool.encryptBlocksECB(key: prfKey, blocks: blocks) == first)

        let random = try await pool.random(count: 32)
        #expect(random.count == 32)
        await pool.shutdown()
    }
}

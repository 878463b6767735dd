import Foundation
import HSM
import HSMTestSupport
import Logging
import PKCS11
import Synchronization
import Testing

/// Every function of one module answers `CKR_DEVICE_REMOVED` while armed, as a pulled HSM
/// partition does; `C_Finalize` still works (it tears down the library's own state).
final class DeviceRemoved: PKCS11FaultInjector {
    let armed = Atomic<Bool>(false)
    let injected = Atomic<Int>(0)

    func fault(for function: PKCS11Function) -> PKCS11ReturnValue? {
        guard armed.load(ordering: .relaxed), function != .finalize else { return nil }
        injected.wrappingAdd(1, ordering: .relaxed)
        return .deviceRemoved
    }
}

/// Tells the load tasks to stop.
final class StopFlag: Sendable {
    let value = Atomic<Bool>(false)
}

/// Two SoftHSM tokens in one pool, each through its own copy of the module (tokens on one loaded
/// module share its C_Initialize/C_Finalize, so one token's recovery would tear down the other).
/// The known HMAC key is imported into each token's persistent session: the same key on both,
/// as the root keys are on replica tokens.
@Suite("Several tokens: spreading, failover, probing back", .serialized)
struct TokenFailoverTests {
    struct TwoTokens: Sendable {
        let pool: SessionPool
        let moduleA: PKCS11Module
        let moduleB: PKCS11Module
        let labels: [String]
        let faultA = DeviceRemoved()
    }

    func twoTokens(_ name: String, workers: Int = 2) async throws -> TwoTokens {
        let tokenA = try TestToken.make("\(name)a"), tokenB = try TestToken.make("\(name)b")
        var configuration = tokenA.configuration(workers: workers)
        configuration.replicas = [TokenEndpoint(modulePath: TestToken.modulePath, token: .label(tokenB.label), userPIN: .file(path: tokenB.pinFile))]
        configuration.tokenProbeInterval = .milliseconds(20)
        let moduleA = try TestToken.isolatedModule(), moduleB = try TestToken.isolatedModule()
        let pool = try SessionPool(configuration: configuration, module: moduleA, replicaModules: [moduleB], logger: Logger(label: "test"))
        try await pool.start()
        let tokens = TwoTokens(pool: pool, moduleA: moduleA, moduleB: moduleB, labels: [tokenA.label, tokenB.label])
        moduleA.installFaultInjector(tokens.faultA)
        return tokens
    }

    @Test("CKR_GENERAL_ERROR takes no token out: answered once, the call moves to the other token; answered by every token (one request's input, on some modules), the call fails as retryable and both stay in service")
    func generalErrorTakesNoTokenOut() async throws {
        let tokens = try await twoTokens("generr")
        let pool = tokens.pool
        let known = KnownHMACKey()
        tokens.moduleA.installFaultInjector(NextCallsFail(.sign, .generalError, count: 3))
        for index in 0..<10 {
            let data = message(1, index)
            #expect(try await pool.hmacSHA256(key: known.key, data: data) == known.expected(data))
        }
        let everySign = RandomFaults([.sign: [(.generalError, 1)]])
        tokens.moduleA.installFaultInjector(everySign)
        tokens.moduleB.installFaultInjector(everySign)
        for index in 0..<10 {
            await #expect { _ = try await pool.hmacSHA256(key: known.key, data: message(2, index)) } throws: { error in
                (error as? HSMError)?.failureClass == "transient failure" && (error as? HSMError)?.isRetryable == true
            }
        }
        #expect(everySign.injected.withLock { $0.values.reduce(0, +) } >= 10)
        #expect(pool.tokenStatuses.allSatisfy { $0.inService && $0.takenOut == 0 }, "\(pool.tokenStatuses)")
        tokens.moduleA.installFaultInjector(tokens.faultA)
        tokens.moduleB.installFaultInjector(nil)
        await pool.shutdown()
    }

    @Test("Calls spread over both tokens, each with its own key cache, and give the same answers")
    func spreads() async throws {
        let tokens = try await twoTokens("spr")
        let pool = tokens.pool
        let known = KnownHMACKey()
        #expect(pool.tokenPools.count == 2)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<16 {
                group.addTask {
                    for index in 0..<50 {
                        let data = message(task, index)
                        let mac = try await pool.hmacSHA256(key: known.key, data: data)
                        #expect(mac == known.expected(data))
                    }
                }
            }
            try await group.waitForAll()
        }
        // Each token resolved the key in its own persistent session: both served calls.
        #expect(pool.tokenPools.allSatisfy { $0.statistics.cachedKeys >= 1 }, "\(pool.tokenPools.map(\.statistics.cachedKeys))")
        #expect(pool.tokenStatuses.allSatisfy { $0.inService })
        await pool.shutdown()
    }

    @Test("Token A removed under load: every call succeeds on B with the right answer, A is taken out, and comes back once the fault clears")
    func tokenLossUnderLoad() async throws {
        let tokens = try await twoTokens("loss")
        let pool = tokens.pool
        let known = KnownHMACKey()
        let succeeded = Tally(), failed = Tally(), wrong = Tally()
        let done = StopFlag()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<32 {
                group.addTask {
                    var index = 0
                    while !done.value.load(ordering: .relaxed) {
                        index += 1
                        let data = message(task, index)
                        do {
                            let mac = try await pool.hmacSHA256(key: known.key, data: data)
                            if mac == known.expected(data) { succeeded.add() } else { wrong.add() }
                        } catch {
                            failed.note("\(error)")
                            failed.add()
                        }
                    }
                }
            }
            group.addTask {
                defer { done.value.store(true, ordering: .relaxed) }
                try await Task.sleep(for: .milliseconds(50))
                tokens.faultA.armed.store(true, ordering: .relaxed)
                // Bounded waits, not timing assertions: the test fails below if a state is never reached.
                for _ in 0..<500 where pool.tokenStatuses[0].inService { try await Task.sleep(for: .milliseconds(10)) }
                try await Task.sleep(for: .milliseconds(200))
                tokens.faultA.armed.store(false, ordering: .relaxed)
                for _ in 0..<1_000 where !pool.tokenStatuses[0].inService { try await Task.sleep(for: .milliseconds(10)) }
                try await Task.sleep(for: .milliseconds(100))
            }
            try await group.waitForAll()
        }
        #expect(tokens.faultA.injected.load(ordering: .relaxed) > 0)
        #expect(wrong.value == 0)
        #expect(failed.value == 0, "\(failed.lines.prefix(3))")
        #expect(succeeded.value > 32)
        let status = pool.tokenStatuses[0]
        #expect(status.takenOut >= 1 && status.broughtBack >= 1 && status.inService, "\(status)")
        #expect(pool.tokenStatuses[1].takenOut == 0)
        // Token A answers on its own again, with the right key.
        #expect(try await pool.tokenPools[0].hmacSHA256(key: known.key, data: [7]) == known.expected([7]))
        await pool.shutdown()
    }

    @Test("Token-object work stays on the first token: while it is down it fails as retryable and is never run on B")
    func tokenObjectWorkStaysOnFirstToken() async throws {
        let tokens = try await twoTokens("obj")
        let pool = tokens.pool
        let known = KnownHMACKey()
        _ = try await pool.hmacSHA256(key: known.key, data: [1])
        tokens.faultA.armed.store(true, ordering: .relaxed)
        let label = "custos/test/only-on-a"
        do {
            _ = try await pool.withPersistentSession { session in
                try session.createObject([.class(.data), .label(label), .token(true), .private(true), .dataValue([1, 2, 3])])
            }
            Issue.record("a token-object write ran while the first token was down")
        } catch let error as HSMError {
            #expect(error.isRetryable, "\(error)")
        }
        // Idempotent calls still succeed (on B).
        #expect(try await pool.hmacSHA256(key: known.key, data: [2]) == known.expected([2]))
        tokens.faultA.armed.store(false, ordering: .relaxed)
        let onB = try await pool.tokenPools[1].withPersistentSession { session in try session.findObjects([.class(.data), .label(label)]).count }
        #expect(onB == 0, "the write was not moved to the replica")
        await pool.shutdown()
    }

    @Test("Per-token status: a removed token says since when it is out, why, and that it is probed; back in service, only the counts and the last failure remain")
    func perTokenStatus() async throws {
        let tokens = try await twoTokens("sts")
        let pool = tokens.pool
        let known = KnownHMACKey()
        let fresh = pool.tokenHealth
        #expect(fresh.map(\.label) == tokens.labels)
        for token in fresh {
            #expect(token.status.inService && token.status.outOfServiceSince == nil && token.status.lastErrorClass == nil)
            #expect(token.statistics.running && !token.statistics.breakerOpen)
        }

        let removed = Date()
        tokens.faultA.armed.store(true, ordering: .relaxed)
        // Calls (all answered, by B) until one on A fails and takes it out; then a probe or more.
        for index in 0..<500 where pool.tokenStatuses[0].inService {
            #expect(try await pool.hmacSHA256(key: known.key, data: message(0, index)) == known.expected(message(0, index)))
        }
        for _ in 0..<500 where pool.tokenStatuses[0].probesWhileOut == 0 { try await Task.sleep(for: .milliseconds(10)) }
        let out = pool.tokenHealth
        #expect(!out[0].status.inService && out[1].status.inService)
        #expect(out[0].status.outOfServiceSince.map { $0 >= removed } == true, "\(out[0].status)")
        #expect(out[0].status.lastErrorClass == "unavailable")
        #expect(out[0].status.probesWhileOut >= 1 && out[0].status.lastProbe != nil)
        #expect(out[1].status.lastErrorClass == nil)

        tokens.faultA.armed.store(false, ordering: .relaxed)
        for _ in 0..<1_000 where !pool.tokenStatuses[0].inService { try await Task.sleep(for: .milliseconds(10)) }
        let back = pool.tokenHealth[0].status
        #expect(back.inService && back.outOfServiceSince == nil && back.takenOut == 1 && back.broughtBack == 1, "\(back)")
        #expect(back.lastErrorClass == "unavailable", "the failure that took it out stays for the operator")
        await pool.shutdown()
    }

    @Test("Two tokens on one module path are refused: they would share one library's recovery")
    func sharedModuleRefused() throws {
        var configuration = try TestToken.make("shr").configuration()
        configuration.replicas = [TokenEndpoint(modulePath: configuration.modulePath, token: .label("other"), userPIN: configuration.userPIN)]
        let error = #expect(throws: HSMError.self) { _ = try SessionPool(configuration: configuration, logger: Logger(label: "test")) }
        guard case .configuration(let reason) = error else { Issue.record("got \(String(describing: error))"); return }
        #expect(reason.contains("serves two configured tokens"))
    }
}

public import Logging
public import PKCS11
import SecureMemory
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A bounded pool of PKCS#11 sessions on one token, each owned by a worker thread, plus one
/// persistent logged-in session that holds the login and owns unwrapped session keys.
///
/// ```swift
/// let pool = try SessionPool(configuration: configuration, logger: logger)
/// try await pool.start()
/// let mac = try await pool.hmacSHA256(key: .tokenObject(label: "custos/audit/v1"), data: bytes)
/// ```
///
/// Failures are recovered by the class of their `CK_RV` (``RecoveryClass``): a lost session is
/// replaced, a lost login is restored and keys re-resolved, a lost device is re-initialised
/// after in-flight calls drain, with a circuit breaker meanwhile; PIN errors are never retried.
/// What to do is decided by ``RecoveryStateMachine`` (a value, table-tested without an HSM);
/// this class owns the threads and makes the PKCS#11 calls.
///
/// ## Several tokens
/// With ``HSMConfiguration/replicas`` the pool is the first token's pool and owns one pool per
/// replica; ``withSession(_:_:)`` then routes each call by ``TokenFailover``'s rules (idempotent
/// operations go to the least-loaded healthy token and move to another when theirs fails;
/// token-object work stays on the first token). ``tokenPools`` reaches each token on its own.
public final class SessionPool: Sendable {
    public let configuration: HSMConfiguration
    public let module: PKCS11Module
    let logger: Logger
    let queue = WorkQueue()
    let gate = CallGate()
    let metrics: SessionPoolMetrics
    /// Runs tasks on the worker threads; see ``withPreferredExecutor(_:)``.
    public let executor: HSMTaskExecutor

    private let state = Mutex(Lifecycle.idle)
    /// The persistent session: it holds the login and owns the session objects.
    let persistent = Mutex<PKCS11Session?>(nil)
    /// Resolved key handles, bounded by ``HSMConfiguration/maxCachedKeys`` (see ``resolve(_:)``).
    private let keyCache: Mutex<KeyHandleCache>
    /// Orders key uses for least-recently-used eviction (``CachedKeyHandle/lastUse``).
    private let keyUseClock = Atomic<UInt64>(0)
    private let keyEvictions = Atomic<Int>(0)
    /// Requests queued to a worker thread (a hop there and back): calls from a task that
    /// prefers ``executor`` run inline and are not counted.
    private let requestsQueued = Atomic<Int>(0)
    /// Recovery, circuit breaker and login policy (``RecoveryStateMachine``).
    let recovery: RecoveryLock
    private let openSessions = Atomic<Int>(0)
    let slot = Mutex<SlotID?>(nil)
    private let pin: SecretBytes
    private let acquireTimeout: UInt64
    /// The replica tokens and the routing over them; `nil` with one token.
    let failover: TokenFailover?

    private enum Lifecycle {
        /// `starting`: the threads are being made (they may run before ``start()`` records them).
        case idle, starting, running(workers: [pthread_t], watchdog: pthread_t), stopped
    }

    /// Loads the module(s) and reads the PIN(s); no PKCS#11 session is opened until ``start()``.
    /// - Throws: ``HSMError/configuration(_:)`` or ``HSMError/pinUnreadable(_:)``.
    public convenience init(configuration: HSMConfiguration, logger: Logger) throws {
        try self.init(configuration: configuration, module: try Self.load(configuration.modulePath, configuration.initArguments), logger: logger)
    }

    /// Uses an already loaded module for the first token (tests load their own copy to isolate
    /// `C_Finalize`), and `replicaModules` for ``HSMConfiguration/replicas`` in order (`nil`:
    /// loaded from their paths, which must differ from each other and from the first token's).
    public init(configuration: HSMConfiguration, module: PKCS11Module, replicaModules: [PKCS11Module]? = nil, logger: Logger) throws {
        // Bounded: each worker is a thread with a session, and a thread the system refuses
        // would stop the process rather than be reported.
        guard (1...HSMConfiguration.maximumWorkers).contains(configuration.workers) else {
            throw HSMError.configuration("the pool takes 1 to \(HSMConfiguration.maximumWorkers) workers (hsm.workers, --workers), not \(configuration.workers)")
        }
        guard configuration.maxCachedKeys >= 1 else { throw HSMError.configuration("the key cache needs room for at least one key") }
        failover = try Self.replicaPools(configuration, modules: replicaModules, logger: logger)
        self.configuration = configuration
        self.module = module
        self.logger = logger
        do {
            pin = try configuration.userPIN.read()
        } catch {
            throw HSMError.pinUnreadable(error)
        }
        acquireTimeout = configuration.acquireTimeout.nanoseconds
        recovery = RecoveryLock(RecoveryStateMachine(
            backoff: configuration.recoveryBackoff.lowerBound.nanoseconds ... configuration.recoveryBackoff.upperBound.nanoseconds
        ))
        metrics = SessionPoolMetrics(label: String(describing: configuration.token))
        keyCache = Mutex(KeyHandleCache(limit: configuration.maxCachedKeys))
        executor = HSMTaskExecutor(queue: queue)
    }

    private static func load(_ path: String, _ initArguments: String?) throws -> PKCS11Module {
        do {
            return try PKCS11Module(path: path, initArguments: initArguments)
        } catch {
            throw HSMError.configuration(String(describing: error))
        }
    }

    /// One single-token pool per replica, each on its own module.
    private static func replicaPools(_ configuration: HSMConfiguration, modules: [PKCS11Module]?, logger: Logger) throws -> TokenFailover? {
        let replicas = configuration.replicas
        guard !replicas.isEmpty else { return nil }
        guard replicas.count < TokenFailover.maxTokens else {
            throw HSMError.configuration("\(replicas.count + 1) tokens configured; one pool routes over at most \(TokenFailover.maxTokens)")
        }
        let loaded: [PKCS11Module]
        if let modules {
            guard modules.count == replicas.count else {
                throw HSMError.configuration("\(replicas.count) replica tokens configured but \(modules.count) modules given")
            }
            loaded = modules
        } else {
            var paths: Set<String> = [configuration.modulePath]
            for replica in replicas where !paths.insert(replica.modulePath).inserted {
                throw HSMError.configuration(
                    "module \(replica.modulePath) serves two configured tokens: tokens on one loaded module share its C_Initialize and C_Finalize, so give each token its own module (a copy of the library file)"
                )
            }
            loaded = try replicas.map { try load($0.modulePath, $0.initArguments) }
        }
        let pools = try zip(replicas, loaded).map { replica, module in
            try SessionPool(configuration: configuration.replicaConfiguration(replica), module: module, logger: logger)
        }
        return TokenFailover(replicas: pools, probeInterval: configuration.tokenProbeInterval, logger: logger)
    }

    /// Every token's own pool, the first token's (this one) first: for work that must reach a
    /// particular token (start-up's replica check, writes every token needs). With one token,
    /// just this pool. The first is this pool itself, so its ``withSession(_:_:)`` and typed
    /// operations still route replicable work to any token in service: use
    /// ``withTokenSession(_:_:)``, ``withPersistentSession(_:)`` or ``discard(_:)`` to stay on
    /// one token (helper-79: a test's "on each token" loop ran its first call on the replica).
    public var tokenPools: [SessionPool] { [self] + (failover?.replicas ?? []) }

    /// ``tokenPools`` in service: their root keys were checked (at start-up, or before their
    /// return). A token out of service — for its keys, or for its device — may have been re-made
    /// meanwhile and answer with keys that are not the service's, until a probe's check passes.
    /// Work that goes token by token and trusts what it finds (signing with a token object,
    /// reading a pin) goes only to these.
    public var tokenPoolsInService: [SessionPool] {
        zip(tokenPools, tokenStatuses).filter { $0.1.inService }.map(\.0)
    }

    /// Makes every probe run `check` on a token out of service that answers again, and keep it
    /// out while `check` throws: start-up installs the replica root-key check here, so a token
    /// re-made with another root while it was out never serves. An ``HSMError`` means the check
    /// could not be made (a token did not answer it): the token stays out until the next probe,
    /// its keys not in doubt. Any other error is the verdict that its keys differ
    /// (``TokenStatus/keysInDoubt``). Nothing to do with one token.
    public func checkTokensBeforeTheirReturn(_ check: @escaping @Sendable (_ token: SessionPool) async throws -> Void) {
        failover?.setReturnCheck(check)
    }

    /// Whether each token serves calls now, in ``tokenPools`` order.
    public var tokenStatuses: [TokenStatus] {
        failover?.statuses(primary: self) ?? [TokenStatus(token: String(describing: configuration.token), inService: true, takenOut: 0, broughtBack: 0)]
    }

    // MARK: Lifecycle

    /// Starts the worker threads, initialises the library, selects the token and logs in.
    /// - Throws: ``HSMError``; the pool is stopped again when start fails.
    public func start() async throws {
        let shouldStart = state.withLock { state -> Bool in
            guard case .idle = state else { return false }
            state = .starting
            return true
        }
        guard shouldStart else { throw HSMError.configuration("the pool was already started") }
        var workers = [pthread_t]()
        let watchdog: pthread_t
        do {
            for index in 0..<configuration.workers {
                let worker = SessionWorker(pool: self, index: index)
                workers.append(try startThread(name: "custos-hsm-\(index)") { worker.runLoop() })
            }
            watchdog = try startThread(name: "custos-hsm-wd") { self.watchdogLoop() }
        } catch {
            // The system refused a thread (its limit, with many pools or tokens): the threads
            // started so far end once the queue stops (no session is open yet), and start
            // fails with the reason instead of the process stopping.
            state.withLock { $0 = .stopped }
            for request in queue.stop() { request.fail(.notRunning) }
            throw error
        }
        state.withLock { $0 = .running(workers: workers, watchdog: watchdog) }
        metrics.sessionsMax.record(configuration.workers)
        do {
            try await submit { _ in try self.establish() }
            // Every configured token must answer at start-up: the replica check reads each one.
            for replica in failover?.replicas ?? [] {
                do {
                    try await replica.start()
                } catch {
                    logger.error("HSM replica token did not start", metadata: ["token": "\(replica.configuration.token)", "error": "\(error)"])
                    throw error
                }
            }
        } catch {
            await shutdown()
            throw error
        }
        failover?.startProbing(primary: self)
        metrics.tokenInService.record(1)
        logger.info("HSM session pool started", metadata: [
            "module": "\(configuration.modulePath)", "token": "\(configuration.token)", "workers": "\(configuration.workers)",
        ])
        if let problem = module.tokenFolderLockProblem {
            logger.warning("SoftHSM token files unprotected from other processes' logins (docs/operations.md)", metadata: ["reason": "\(problem)"])
        }
    }

    /// Stops accepting work, fails what still waits, lets running calls finish, closes every
    /// session (after draining: never `C_CloseAllSessions` with calls in flight).
    public func shutdown() async {
        let threads: ([pthread_t], pthread_t)? = state.withLock { state in
            guard case .running(let workers, let watchdog) = state else { return nil }
            state = .stopped
            return (workers, watchdog)
        }
        guard let (workers, watchdog) = threads else { return }
        if let failover {
            await failover.stop()
            for replica in failover.replicas { await replica.shutdown() }
        }
        recovery.step { $0.shutDown() }
        for request in queue.stop() { request.fail(.notRunning) }
        // Joining blocks, so it happens on a thread of its own rather than the cooperative pool
        // (here, if the system refuses even that thread).
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let join: @Sendable () -> Void = {
                for worker in workers { pthread_join(worker, nil) }
                pthread_join(watchdog, nil)
                self.gate.drain {
                    self.persistent.withLock { session in
                        try? session?.close()
                        session = nil
                    }
                }
                continuation.resume()
            }
            do {
                _ = try startThread(name: "custos-hsm-join", join)
            } catch {
                join()
            }
        }
        logger.info("HSM session pool stopped")
    }

    // MARK: Running work

    /// Runs `body` with a session on a worker thread and returns its result.
    ///
    /// Called from a task that prefers ``executor``, the body runs inline on the current worker
    /// (no thread hop); otherwise the request waits for a worker for at most the configured
    /// timeout. The body may run twice (one retry after recovery), so it must be idempotent.
    /// With several tokens the call is routed by ``TokenFailover`` (``HSMOperation/custom`` runs
    /// on the first token only).
    /// - Throws: ``HSMError``.
    @inline(__always)
    public func withSession<R: Sendable>(
        _ operation: HSMOperation = .custom,
        _ body: @escaping @Sendable (HSMSession) throws -> R
    ) async throws -> R {
        if let failover { return try await failover.run(operation, primary: self, body) }
        return try await withTokenSession(operation, body)
    }

    /// ``withSession(_:_:)`` on this pool's own token, whatever the replicas: for work that must
    /// reach one particular token of ``tokenPools``.
    @inline(__always)
    public func withTokenSession<R: Sendable>(
        _ operation: HSMOperation,
        _ body: @escaping @Sendable (HSMSession) throws -> R
    ) async throws -> R {
        if let worker = SessionWorker.current, worker.pool === self {
            return try translate { try worker.perform(operation, body) }
        }
        return try await submit { worker in try worker.perform(operation, body) }
    }

    /// Runs `body` in a task that prefers the pool's executor, so every HSM call in it runs
    /// on a worker thread without a hop.
    public func withPreferredExecutor<R: Sendable>(_ body: @Sendable () async throws -> R) async rethrows -> R {
        try await withTaskExecutorPreference(executor) { try await body() }
    }

    func submit<R: Sendable>(_ body: @escaping @Sendable (SessionWorker) throws -> R) async throws -> R {
        requestsQueued.wrappingAdd(1, ordering: .relaxed)
        return try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<R, any Error>) in
            let request = PendingRequest(
                heldBackAtEnqueue: gate.heldBackNanoseconds,
                run: { worker in
                    do {
                        let result = try self.translate { try body(worker) }
                        continuation.resume(returning: result)
                    } catch {
                        continuation.resume(throwing: error)
                    }
                },
                fail: { error in continuation.resume(throwing: error) }
            )
            if !queue.push(request: request) { continuation.resume(throwing: HSMError.notRunning) }
        }
    }

    /// Nothing but ``HSMError`` leaves the pool.
    private func translate<R>(_ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let error as HSMError {
            throw error
        } catch let error as PKCS11Error {
            throw finalError(error, RecoveryClass(error.returnValue))
        } catch let error as PKCS11ModuleError {
            throw HSMError.configuration(error.description)
        }
    }

    func finalError(_ error: PKCS11Error, _ recovery: RecoveryClass) -> HSMError {
        switch recovery {
        case .sessionFatal, .loginLost, .operationLeftActive, .device:
            .unavailable(reason: error.description, retryAfterNanoseconds: nil)
        case .transient:
            .transientFailure(error)
        case .pin:
            .pinRejected(error.returnValue)
        case .caller:
            .operationFailed(error)
        }
    }

    // MARK: State the workers read

    var generation: UInt64 { recovery.generation }
    var epoch: UInt64 { recovery.epoch }

    func currentSlot() throws -> SlotID {
        guard let current = slot.withLock({ $0 }) else {
            throw HSMError.unavailable(reason: "no token selected yet", retryAfterNanoseconds: nil)
        }
        return current
    }

    func sessionOpened() { openSessions.wrappingAdd(1, ordering: .relaxed) }
    func sessionClosed() { openSessions.wrappingSubtract(1, ordering: .relaxed) }

    // MARK: Keys

    /// A stamp for the key use happening now (one relaxed increment per call with a key).
    @inline(__always)
    func nextKeyUse() -> UInt64 { keyUseClock.wrappingAdd(1, ordering: .relaxed).newValue }

    /// The handle of `key` for the current generation, pinned for the calling body (the caller
    /// releases it when the body ends): from the shared cache, else resolved in the persistent
    /// session and shared by all workers.
    ///
    /// A key whose resolver creates a session object (an unwrap) takes one of the cache's
    /// ``HSMConfiguration/maxCachedKeys`` places; when they are all taken, the least recently
    /// used handle no call pins is evicted and its object destroyed here, in the persistent
    /// session that owns it, before the new object is made — so the token never holds more of
    /// the pool's session objects than the bound, unless every cached key is pinned by a
    /// running call at once. Keys found on the token are kept outside the bound and never
    /// destroyed (`C_DestroyObject` on a token object would delete it for good).
    func resolve(_ key: HSMKey, for worker: SessionWorker) throws -> CachedKeyHandle {
        let generation = self.generation
        if let cached = keyCache.withLock({ $0.handle(key.id, generation: generation) }), cached.acquire(stamp: nextKeyUse()) {
            metrics.keyCacheHits.increment()
            return cached
        }
        metrics.keyCacheMisses.increment()
        return try persistent.withLock { persistent in
            let session = try persistentSession(&persistent)
            let generation = self.generation
            let found = keyCache.withLock { cache -> (cached: CachedKeyHandle?, victims: [CachedKeyHandle]) in
                cache.enter(generation: generation)
                // Another worker may have resolved it while this one waited for the lock.
                if let cached = cache.handle(key.id, generation: generation), cached.acquire(stamp: nextKeyUse()) {
                    return (cached, [])
                }
                return (nil, cache.makeRoom())
            }
            if let cached = found.cached { return cached }
            let victims = found.victims
            let handle: ObjectHandle
            do {
                for victim in victims { try destroy(victim, in: session) }
                let resolution = KeyResolution(session: session, operationSession: worker.sessionInUse) { dependency in
                    try self.tokenObjectHandle(dependency, in: session, generation: generation)
                }
                handle = try key.resolve(resolution)
            } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .sessionFatal {
                // The caller's session (a resolver's MAC check runs there) fails the same way,
                // and the worker replaces that one.
                forgetPersistentSessionIfGone(&persistent, session)
                throw error
            }
            // Only an object the resolver made in this session may be destroyed on eviction:
            // a token object (`CKA_TOKEN` true, or not readable) is kept, outside the bound.
            let evictable = (try? session.boolAttribute(.token, of: handle)) == false
            let cached = CachedKeyHandle(id: key.id, handle: handle, generation: generation, evictable: evictable, stamp: nextKeyUse())
            let size = keyCache.withLock { cache in
                cache.insert(cached)
                return cache.sessionObjects
            }
            metrics.keyCacheObjects.record(size)
            return cached
        }
    }

    /// The handle of `key`, a token object another key's resolver needs (its root KEK, the MAC
    /// key), from the cache, else found and cached outside the bound — so a miss, which a
    /// bounded cache makes a steady-state path, runs no `C_FindObjects` (slow on file-backed
    /// tokens with many objects). Runs under the persistent-session lock, like eviction.
    private func tokenObjectHandle(_ key: HSMKey, in session: PKCS11Session, generation: UInt64) throws -> ObjectHandle {
        if let cached = keyCache.withLock({ $0.handle(key.id, generation: generation) }), !cached.evictable {
            return cached.handle
        }
        let handle = try key.resolve(in: session)
        // Anything but a token object (which no resolver should ask for here) is not cached.
        guard (try? session.boolAttribute(.token, of: handle)) == true else { return handle }
        let cached = CachedKeyHandle(id: key.id, handle: handle, generation: generation, evictable: false, stamp: 0)
        keyCache.withLock { $0.insert(cached) }
        return handle
    }

    /// Destroys an evicted handle's session object. Nothing pins it any more (it was evicted
    /// idle), and the calls that still hold it in a worker's cache fail to pin it and resolve
    /// the key again.
    private func destroy(_ victim: CachedKeyHandle, in session: PKCS11Session) throws {
        metrics.keyCacheEvictions.increment()
        keyEvictions.wrappingAdd(1, ordering: .relaxed)
        do {
            try session.destroyObject(victim.handle)
        } catch let error as PKCS11Error {
            metrics.recordError(error)
            if RecoveryClass(error.returnValue) == .sessionFatal { throw error }
            // The object stays until the next logout; the bound is off by one until then.
            logger.warning("could not destroy an evicted key's session object", metadata: ["rv": "\(error.returnValue.name)"])
        }
    }

    /// Destroys now the session objects this pool made for `keys` in its current generation, and
    /// forgets them, for a key that must not outlive its use (a rotation's rewrap KEK, rebuilt
    /// from shares). Only the pool may destroy them: it knows which handles are still this
    /// generation's — after a re-login the objects are gone already and their numbers may be
    /// another object's on a module that reuses handles. A key a running call pins, a token
    /// object, or one not resolved is left.
    /// - Returns: how many objects were destroyed.
    @discardableResult
    public func discard(_ keys: [HSMKey]) async throws -> Int {
        try await withTokenSession(.custom) { _ in
            try self.persistent.withLock { persistent in
                let session = try self.persistentSession(&persistent)
                let victims = self.keyCache.withLock { cache in
                    cache.enter(generation: self.generation)
                    return keys.compactMap { cache.evict($0.id) }
                }
                do {
                    for victim in victims { try self.destroy(victim, in: session) }
                } catch let error as PKCS11Error {
                    self.forgetPersistentSessionIfGone(&persistent, session)
                    throw error
                }
                return victims.count
            }
        }
    }

    /// Runs `body` in the persistent session, which owns session objects (unwrapped keys).
    /// Serialised: use it to create keys, not for bulk work. Always this pool's own token (the
    /// first, with replicas): reach another through ``tokenPools``.
    public func withPersistentSession<R: Sendable>(_ body: @escaping @Sendable (PKCS11Session) throws -> R) async throws -> R {
        try await withTokenSession(.custom) { _ in
            try self.persistent.withLock { persistent in
                let session = try self.persistentSession(&persistent)
                do {
                    return try body(session)
                } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .sessionFatal {
                    self.forgetPersistentSessionIfGone(&persistent, session)
                    throw error
                }
            }
        }
    }

    /// After a session-fatal error in work that used `session`, the persistent one: forgets it if
    /// it says itself that it is gone (the error may have come from another session) — and with
    /// it every session object, so a new generation starts and no stale handle is used again.
    /// Never forgets a session that may live on: a forgotten open session would stay open, and
    /// keep the token from being initialised again.
    func forgetPersistentSessionIfGone(_ persistent: inout PKCS11Session?, _ session: PKCS11Session) {
        do {
            _ = try session.state()
        } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .sessionFatal {
            persistent = nil
            recovery.step { $0.persistentSessionLost() }
        } catch {
            // Not known to be gone: kept, and the retry tells.
        }
    }

    /// The persistent session, opened and logged in if there is none.
    func persistentSession(_ persistent: inout PKCS11Session?) throws -> PKCS11Session {
        if let session = persistent { return session }
        let session = try module.openSession(slot: try currentSlot())
        persistent = session
        try login(session)
        return session
    }

    // MARK: Login

    /// Initial set-up, on a worker thread: initialise, select the token, log in.
    private func establish() throws {
        module.onTokenFolderWaitAbandoned { [logger, metrics] folder in
            logger.warning("gave up waiting for another process's hold on the SoftHSM token folder; went on without it (docs/operations.md)", metadata: [
                "folder": "\(folder)",
            ])
            metrics.tokenFolderWaitsAbandoned.increment()
        }
        try module.initialize()
        let token = try module.findToken(configuration.token)
        if let maximum = token.maxSessionCount, maximum < configuration.workers + 1 {
            throw HSMError.configuration(
                "token allows \(maximum) sessions; the pool needs \(configuration.workers + 1) (workers + 1 persistent)"
            )
        }
        slot.withLock { $0 = token.slot }
        try gate.drain {
            try persistent.withLock { persistent in
                persistent = nil
                _ = try persistentSession(&persistent)
            }
        }
    }

    /// Logs the user in, unless the PIN already failed or the token says a try is risky
    /// (the rules are ``RecoveryStateMachine``'s).
    func login(_ session: PKCS11Session) throws {
        if let refusal = recovery.read({ $0.loginRefusal() }) { throw refusal.error }
        let token = try module.tokenInfo(slot: session.slot)
        if let refusal = recovery.read({ $0.loginRefusal(userPINLocked: token.userPINLocked, userPINFinalTry: token.userPINFinalTry) }) {
            throw refusal.error
        }
        let result: RecoveryStateMachine.LoginResult
        do {
            try session.login(.user, pin: pin)
            result = .succeeded
        } catch let error as PKCS11Error where error.returnValue == .userAlreadyLoggedIn {
            result = .alreadyLoggedIn
        } catch let error as PKCS11Error where RecoveryClass(error.returnValue) == .pin {
            result = .pinRefused(error.returnValue)
        }
        guard let refusal = recovery.step({ $0.loginFinished(result) }) else { return }
        if case .pinRejected(let returnValue) = refusal {
            logger.error("HSM login refused; the pool will not retry it", metadata: ["rv": "\(returnValue.name)"])
        }
        throw refusal.error
    }

    // MARK: Watchdog

    /// Fails requests that waited too long and samples the gauges.
    private func watchdogLoop() {
        let tick = min(max(acquireTimeout / 4, 1_000_000), 50_000_000)
        let sleeper = ConditionLock()
        // Not `isRunning`: the thread may get here before start() has recorded it and marked the
        // pool running, and a watchdog that stopped then left every wait without a timeout.
        while !isStopped {
            for (request, waited) in queue.removeExpired(timeout: acquireTimeout) {
                request.fail(expiryError(request, waited: waited))
            }
            metrics.waiting.record(queue.waitingRequests)
            metrics.sessionsInUse.record(gate.callsInFlight)
            metrics.sessionsOpen.record(openSessions.load(ordering: .relaxed))
            sleeper.withLock { sleeper.wait(untilNanoseconds: monotonicNanoseconds() + tick) }
        }
    }

    /// What a request that waited `waited` for a session is told. Behind a recovery (a network
    /// HSM's re-initialisation can take seconds) the HSM was away, and the caller should retry
    /// as for any outage; otherwise every session was busy, and the pool may be too small.
    private func expiryError(_ request: PendingRequest, waited: UInt64) -> HSMError {
        let heldBack = gate.heldBackNanoseconds &- request.heldBackAtEnqueue
        if PendingRequest.heldBackByRecovery(waited: waited, heldBack: heldBack) {
            return .unavailable(reason: "HSM recovering; no session within \(waited / 1_000_000) ms", retryAfterNanoseconds: nil)
        }
        metrics.exhausted.increment()
        return .exhausted(waitedNanoseconds: waited, maxSessions: configuration.workers)
    }

    private var isStopped: Bool {
        state.withLock { if case .stopped = $0 { true } else { false } }
    }

    private var isRunning: Bool {
        state.withLock { if case .running = $0 { true } else { false } }
    }

    // MARK: Status

    /// A snapshot for `custos hsm status` and health checks.
    public var statistics: SessionPoolStatistics {
        SessionPoolStatistics(
            workers: configuration.workers,
            openSessions: openSessions.load(ordering: .relaxed),
            callsInFlight: gate.callsInFlight,
            waitingRequests: queue.waitingRequests,
            generation: generation,
            epoch: epoch,
            breakerOpen: recovery.breakerOpen,
            cachedKeys: keyCache.withLock { $0.count },
            cachedSessionObjects: keyCache.withLock { $0.sessionObjects },
            maxCachedKeys: configuration.maxCachedKeys,
            keyEvictions: keyEvictions.load(ordering: .relaxed),
            requestsQueued: requestsQueued.load(ordering: .relaxed),
            running: isRunning
        )
    }

    /// The selected token as the module describes it now.
    public func tokenInfo() async throws -> TokenInfo {
        try await withSession(.custom) { session in try self.module.tokenInfo(slot: session.pkcs11.slot) }
    }
}

/// What ``SessionPool/statistics`` reports.
public struct SessionPoolStatistics: Sendable, Hashable, Codable {
    public let workers: Int
    public let openSessions: Int
    public let callsInFlight: Int
    public let waitingRequests: Int
    public let generation: UInt64
    public let epoch: UInt64
    public let breakerOpen: Bool
    /// Handles held, token objects included.
    public let cachedKeys: Int
    /// Session objects the cache holds on the token (at most ``maxCachedKeys`` but for keys
    /// pinned by running calls).
    public let cachedSessionObjects: Int
    public let maxCachedKeys: Int
    /// Session objects destroyed to stay within ``maxCachedKeys`` since the pool started.
    public let keyEvictions: Int
    /// Requests queued to a worker thread since the pool started (each a hop there and back;
    /// calls from tasks on the pool's executor run inline and are not counted).
    public let requestsQueued: Int
    public let running: Bool
}

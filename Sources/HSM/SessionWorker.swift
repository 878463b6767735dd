import PKCS11

#if canImport(Glibc)
import Glibc
#endif

/// One worker thread and the PKCS#11 session it owns.
///
/// PKCS#11 calls block (a network HSM takes milliseconds), so they run here, never on Swift's
/// cooperative pool. A worker runs queued requests and, for tasks that prefer the pool's
/// executor, their code too, so those tasks call the HSM without changing threads.
final class SessionWorker: @unchecked Sendable {
    // SAFETY: the `var`s (`session`, `sessionEpoch`, the call counter, the handle maps) are read
    // and written only on this worker's own thread: by its run loop and by requests or executor
    // jobs it runs. Everything else is immutable.
    private var session: PKCS11Session?
    private var sessionEpoch: UInt64 = 0
    /// Calls since the last timed one: one call in `timingInterval` is timed, because two clock
    /// reads per call were a measurable share of a ~7 µs HMAC.
    private var untimedCalls = 0
    private static let timingInterval = 16
    /// Handles this worker already looked up, so the hot path takes no lock. Entries the pool
    /// evicted stay here until used (they then fail to pin) or until the map is cleared.
    private var keyHandles = [String: CachedKeyHandle]()
    /// Handles pinned by the bodies running on this thread, released when each body ends.
    private var pinned = [CachedKeyHandle]()
    /// Past this many entries ``keyHandles`` is emptied: evicted handles must not pile up here.
    private let keyHandleLimit: Int
    // Strong on purpose: an unowned or weak reference forces every retain of the pool through
    // the slow side-table path, which showed up in profiles. The thread, not the pool, owns the worker.
    let pool: SessionPool
    let index: Int

    init(pool: SessionPool, index: Int) {
        self.pool = pool
        self.index = index
        keyHandleLimit = max(pool.configuration.maxCachedKeys * 2, 64)
    }

    /// The worker running on the current thread, if any.
    static var current: SessionWorker? {
        guard let pointer = pthread_getspecific(currentWorkerKey) else { return nil }
        return Unmanaged<SessionWorker>.fromOpaque(pointer).takeUnretainedValue()
    }

    var hasSession: Bool { session != nil }

    /// The session of the body running on this thread (a key's resolver checks with it).
    var sessionInUse: PKCS11Session {
        guard let session else { preconditionFailure("a worker's session is read only by the body it runs") }
        return session
    }

    func runLoop() {
        pthread_setspecific(currentWorkerKey, Unmanaged.passUnretained(self).toOpaque())
        let executor = pool.executor.asUnownedTaskExecutor()
        while let item = pool.queue.next() {
            switch item {
            case .job(let job):
                job.runSynchronously(on: executor)
            case .request(let request, let enqueuedAt):
                pool.metrics.waitTime.recordNanoseconds(Int64(monotonicNanoseconds() &- enqueuedAt))
                request.run(self)
            }
        }
        closeSession()
        pthread_setspecific(currentWorkerKey, nil)
    }

    /// Runs `body` with this worker's session, recovering by the class of any PKCS#11 failure
    /// and retrying at most once. The body may therefore run twice; it must be idempotent.
    func perform<R>(_ operation: HSMOperation, _ body: (HSMSession) throws -> R) throws -> R {
        var retried = false
        while true {
            // Read again once past the gate (``attempt(_:_:seen:)``): a call parked there during
            // a recovery must not take that recovery for one that answered its own failure.
            var seen = (generation: pool.generation, epoch: pool.epoch)
            do {
                return try attempt(operation, body, seen: &seen)
            } catch let error as PKCS11Error {
                let (generation, epoch) = seen
                pool.metrics.recordError(error)
                let recovery = RecoveryClass(error.returnValue)
                switch pool.afterFailure(recovery, seenGeneration: generation, seenEpoch: epoch, retried: retried) {
                case .retry:
                    break
                case .recoverLogin:
                    try pool.recoverLogin(seenGeneration: generation, cause: error)
                case .recoverDevice:
                    try pool.recoverDevice(seenEpoch: epoch, cause: error)
                case .surface:
                    throw pool.finalError(error, recovery)
                }
                retried = true
            }
        }
    }

    private func attempt<R>(_ operation: HSMOperation, _ body: (HSMSession) throws -> R, seen: inout (generation: UInt64, epoch: UInt64)) throws -> R {
        try pool.checkBreaker()
        pool.gate.enter()
        defer { pool.gate.exit() }
        seen = (pool.generation, pool.epoch)
        untimedCalls += 1
        let timed = untimedCalls >= Self.timingInterval
        let started = timed ? monotonicNanoseconds() : 0
        let current = try currentSession()
        // Bodies can nest (an inline `withSession` inside a body): release only this one's pins.
        let pinnedBefore = pinned.count
        defer { releasePins(from: pinnedBefore) }
        do {
            let result = try body(HSMSession(pkcs11: current, worker: self))
            if timed {
                untimedCalls = 0
                pool.metrics.recordCall(operation, nanoseconds: monotonicNanoseconds() &- started)
            }
            return result
        } catch {
            // A failed call can leave an operation active (SoftHSM after CKR_ARGUMENTS_BAD), and
            // nothing clears it: never hand this session to the next caller — whatever error the
            // body made of the failure, since a body may catch a PKCS#11 error and throw its own.
            discardSession()
            throw error
        }
    }

    /// The handle of `key` for the current generation, pinned until the running body ends:
    /// from this worker's own cache, else from the pool (which resolves it once for all
    /// workers, and again after evicting it).
    func handle(for key: HSMKey) throws -> ObjectHandle {
        let generation = pool.generation
        if let cached = keyHandles[key.id], cached.generation == generation, cached.acquire(stamp: pool.nextKeyUse()) {
            pool.metrics.keyCacheHits.increment()
            if cached.evictable { pinned.append(cached) }
            return cached.handle
        }
        let resolved = try pool.resolve(key, for: self)
        if resolved.evictable { pinned.append(resolved) }
        if keyHandles.count >= keyHandleLimit { keyHandles.removeAll(keepingCapacity: true) }
        keyHandles[key.id] = resolved
        return resolved.handle
    }

    private func releasePins(from start: Int) {
        guard pinned.count > start else { return }
        for index in start..<pinned.count { pinned[index].release() }
        pinned.removeSubrange(start...)
    }

    /// This worker's session, reopened if the library was re-initialised since it was opened.
    private func currentSession() throws -> PKCS11Session {
        let epoch = pool.epoch
        if let session, sessionEpoch == epoch { return session }
        // A session from before a re-initialisation is forgotten, not closed: its handle number
        // may now belong to someone else's session.
        session = nil
        let opened = try pool.module.openSession(slot: try pool.currentSlot())
        session = opened
        sessionEpoch = epoch
        pool.sessionOpened()
        return opened
    }

    private func discardSession() {
        guard let session else { return }
        if sessionEpoch == pool.epoch { try? session.close() }
        self.session = nil
        pool.sessionClosed()
    }

    /// Closes the session at shutdown (inside the gate, so never during a drain).
    private func closeSession() {
        guard session != nil else { return }
        pool.gate.enter()
        defer { pool.gate.exit() }
        discardSession()
    }
}

/// The thread-local slot that tells a worker thread from any other.
private let currentWorkerKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key, nil)
    return key
}()

/// Starts a joinable thread running `body`. (`pthread_setname_np` needs _GNU_SOURCE and does not
/// import; `name` documents the thread's role at the call site and in the error.)
/// - Throws: ``HSMError/configuration(_:)`` when the system refuses the thread.
func startThread(name: String, _ body: @escaping @Sendable () -> Void) throws(HSMError) -> pthread_t {
    final class Start: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let start = Unmanaged.passRetained(Start(body)).toOpaque()
    let rc = pthread_create(&thread, nil, { context in
        let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
        start.body()
        return nil
    }, start)
    guard rc == 0 else {
        Unmanaged<Start>.fromOpaque(start).release()
        throw HSMError.configuration("cannot start thread \(name): pthread_create returned \(rc) (the system's thread limit?)")
    }
    return thread
}

/// A request waiting for a worker: what to run, and how to fail it if it waits too long.
final class PendingRequest: Sendable {
    let run: @Sendable (SessionWorker) -> Void
    let fail: @Sendable (HSMError) -> Void
    /// ``CallGate/heldBackNanoseconds`` when the request began to wait.
    let heldBackAtEnqueue: UInt64

    init(
        heldBackAtEnqueue: UInt64, run: @escaping @Sendable (SessionWorker) -> Void, fail: @escaping @Sendable (HSMError) -> Void
    ) {
        self.heldBackAtEnqueue = heldBackAtEnqueue
        self.run = run
        self.fail = fail
    }

    /// Whether a request that waited `waited` past the pool's timeout waited on a recovery rather
    /// than on busy sessions: drains (a re-login, a re-initialisation, a reset) held new calls
    /// back for at least half of that wait. Such a wait was for the HSM to come back
    /// ("unavailable"); otherwise every session was busy ("exhausted": add sessions or slow
    /// down). A recovery of a few milliseconds during a busy spell is not an outage, and must not
    /// turn a loaded instance NOT_SERVING (``HSMError/exhausted(waitedNanoseconds:maxSessions:)``
    /// is what the health monitor counts as an answer).
    static func heldBackByRecovery(waited: UInt64, heldBack: UInt64) -> Bool {
        heldBack >= waited / 2
    }
}

/// The locked queue the worker threads sleep on: executor jobs and HSM requests.
final class WorkQueue: Sendable {
    private let lock = ConditionLock()
    // SAFETY: `queue`, `stopping` and `sleepers` are accessed only while `lock` is held.
    private nonisolated(unsafe) var queue = RequestQueue<UnownedJob, PendingRequest>()
    private nonisolated(unsafe) var stopping = false
    private nonisolated(unsafe) var sleepers = 0

    /// Enqueues a job; `false` once the queue is stopping (the caller runs it elsewhere).
    func push(job: UnownedJob) -> Bool {
        lock.withLock {
            guard !stopping else { return false }
            queue.push(job: job)
            if sleepers > 0 { lock.signal() }
            return true
        }
    }

    /// Enqueues a request; `false` once the queue is stopping.
    func push(request: PendingRequest) -> Bool {
        let now = monotonicNanoseconds()
        return lock.withLock {
            guard !stopping else { return false }
            queue.push(request: request, now: now)
            if sleepers > 0 { lock.signal() }
            return true
        }
    }

    /// The next item for a worker, sleeping while there is none; `nil` when stopped and empty.
    func next() -> RequestQueue<UnownedJob, PendingRequest>.Item? {
        lock.withLock {
            while true {
                if let item = queue.popNext() { return item }
                if stopping { return nil }
                sleepers += 1
                lock.wait()
                sleepers -= 1
            }
        }
    }

    func removeExpired(timeout: UInt64) -> [(request: PendingRequest, waited: UInt64)] {
        let now = monotonicNanoseconds()
        return lock.withLock { queue.removeExpired(now: now, timeout: timeout) }
    }

    var waitingRequests: Int { lock.withLock { queue.waitingRequests } }

    /// Stops accepting work, wakes every worker, and hands back the requests nobody will run.
    func stop() -> [PendingRequest] {
        lock.withLock {
            stopping = true
            lock.broadcast()
            return queue.removeAllRequests()
        }
    }
}

/// A request waiting for a worker: what to run, and how to fail it if it waits too long.
final class PendingRequest: Sendable {
    let run: @Sendable (SessionWorker) -> Void
    let fail: @Sendable (HSMError) -> Void
    /// The pool's generation and epoch when the request began to wait: a change by the time it
    /// expires means a recovery held it up.
    let seenGeneration: UInt64
    let seenEpoch: UInt64

    init(
        seenGeneration: UInt64, seenEpoch: UInt64,
        run: @escaping @Sendable (SessionWorker) -> Void, fail: @escaping @Sendable (HSMError) -> Void
    ) {
        self.seenGeneration = seenGeneration
        self.seenEpoch = seenEpoch
        self.run = run
        self.fail = fail
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

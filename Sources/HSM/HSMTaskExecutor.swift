/// A task executor that runs tasks on the pool's session-owning worker threads.
///
/// A request task that prefers it (`withTaskExecutorPreference(pool.executor)`) runs its
/// HSM calls inline on the worker that already holds a session, instead of hopping to a
/// worker and back for every call; one HMAC on SoftHSM costs ~9 µs, about what a hop costs.
public final class HSMTaskExecutor: TaskExecutor {
    let queue: WorkQueue

    init(queue: WorkQueue) {
        self.queue = queue
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if !queue.push(job: unowned) {
            // After shutdown tasks must still run somewhere: the global executor takes them.
            globalConcurrentExecutor.enqueue(unowned)
        }
    }
}

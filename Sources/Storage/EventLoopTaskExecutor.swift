import NIOCore

/// A task executor that runs a task's jobs on one NIO event loop: the loop that owns the
/// leased PostgreSQL connection.
///
/// A transaction body that prefers it (``Database`` does this for every lease) writes each
/// statement to its channel without a hop to the event loop, and resumes after each answer on
/// the thread that read it, instead of being scheduled back onto the cooperative pool: two
/// thread switches fewer per statement (the last profile counted ~25 per Enrol). Work in the
/// body is short (binding, decoding, a comparison); what blocks — HSM calls — goes to the HSM
/// pool's own threads and comes back.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // From the loop's own thread `execute` only queues (no wake-up): a task resumed by an
        // answer the loop just read runs in the same loop iteration.
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

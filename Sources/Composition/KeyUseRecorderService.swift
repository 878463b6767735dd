import Custody
import Logging
import ServiceLifecycle

/// Writes counted key uses to the audit log every `interval`, and once more when the group
/// shuts down gracefully (after the services added later — the gRPC server — have stopped, and
/// before the database and the pool stop). A `kill -9` loses what was counted since the last
/// successful write: at most `interval` plus the write in progress.
///
/// A write that fails (database or HSM down) keeps its counts for the next one (see
/// ``KeyUseRecorder``) and is logged with how many distinct counts are waiting.
struct KeyUseRecorderService: Service {
    let recorder: KeyUseRecorder
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while true {
            // A graceful shutdown (or the group's cancellation) ends the wait early.
            let waited: Void? = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            await flush()
            if waited == nil || Task.isShuttingDownGracefully || Task.isCancelled { return }
        }
    }

    private func flush() async {
        do {
            try await recorder.flush()
        } catch {
            logger.error("cannot write key uses to the audit log; they are kept for the next write", metadata: [
                "kept": "\(recorder.counter.pending.count)", "error": "\(error)",
            ])
        }
    }
}

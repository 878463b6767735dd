public import HSM
public import Storage

extension CustosRuntime {
    /// A runtime started by ``start(pool:database:custody:options:)``: for test harnesses,
    /// whose set-up and tear-down are two calls rather than one scope. Everything else uses
    /// ``run(_:options:services:_:)``.
    public final class Started: Sendable {
        public let runtime: CustosRuntime
        private let stop: AsyncStream<Never>.Continuation
        private let task: Task<Void, any Error>

        init(runtime: CustosRuntime, stop: AsyncStream<Never>.Continuation, task: Task<Void, any Error>) {
            self.runtime = runtime
            self.stop = stop
            self.task = task
        }

        /// Ends the runtime as the end of a ``run(_:options:services:_:)`` body would, and waits
        /// until the database and the pool are closed.
        public func shutdown() async {
            stop.finish()
            _ = try? await task.value
        }
    }

    /// Starts the runtime exactly as ``run(pool:database:custody:options:services:_:)`` does,
    /// and returns once it is assembled; ``Started/shutdown()`` ends it.
    /// - Throws: what `run` throws before its body would start.
    public static func start(
        pool poolConfiguration: HSMConfiguration, database databaseConfiguration: DatabaseConfiguration,
        custody settings: CustodyGraph.Settings, options: Options
    ) async throws -> Started {
        let (stopped, stop) = AsyncStream<Never>.makeStream()
        let (assembled, ready) = AsyncThrowingStream<CustosRuntime, any Error>.makeStream()
        let task = Task {
            do {
                try await run(pool: poolConfiguration, database: databaseConfiguration, custody: settings, options: options) { runtime in
                    ready.yield(runtime)
                    for await _ in stopped {}
                }
                ready.finish()
            } catch {
                ready.finish(throwing: error)
                throw error
            }
        }
        for try await runtime in assembled {
            return Started(runtime: runtime, stop: stop, task: task)
        }
        // `run` either yields the runtime or throws before: not reached.
        throw CancellationError()
    }
}

import Composition
import CustosCommandLine
import HSM
import Logging
import PKCS11
import RPC
import Synchronization
import Verification

/// One service instance in the bench's own process, assembled exactly as `custos serve`
/// assembles itself (``CustosRuntime/run(_:options:services:_:)`` with the RPC's members,
/// TLS on 127.0.0.1, any free port) but with the first token's module given: the bench loads it
/// and installs a fault injector on it. A release `custos serve` has no way to do that.
final class InProcessInstance: Sendable {
    /// host:port, once listening.
    let address: String
    /// The instance's session pool (per-token statuses for the fault's measurements).
    let pool: SessionPool
    private let stopping: AsyncStream<Void>.Continuation
    private let running: Task<Void, any Error>

    /// Starts the instance and waits until it listens.
    /// - Throws: whatever start-up throws (configuration, token, replica check, database).
    init(configuration: CustosConfiguration, firstModule: PKCS11Module, endpoint: ServerEndpoint, settings: RPCSettings, logger: Logger) async throws {
        let (stop, stopping) = AsyncStream<Void>.makeStream()
        let (started, starting) = AsyncThrowingStream<(String, SessionPool), any Error>.makeStream()
        running = Task {
            do {
                var served: CustosServer.Served?
                try await CustosRuntime.run(configuration, options: CustosRuntime.Options(logger: logger, module: firstModule), services: { runtime in
                    let services = CustosServices(runtime.verification(settings.verification, logger: logger), settings: settings, logger: logger)
                    let prepared = try await CustosServer.prepare(services, endpoint: endpoint, metrics: nil, logger: logger)
                    served = prepared
                    return prepared.members
                }) { runtime in
                    guard let address = await served?.listening() else { throw LocalError.failed("the in-process instance stopped before it listened") }
                    starting.yield((address, runtime.pool))
                    for await _ in stop {}
                }
                starting.finish()
            } catch {
                starting.finish(throwing: error)
                throw error
            }
        }
        self.stopping = stopping
        var iterator = started.makeAsyncIterator()
        guard let (address, pool) = try await iterator.next() else { throw LocalError.failed("the in-process instance stopped before it listened") }
        self.address = address
        self.pool = pool
    }

    /// Shuts the instance down gracefully (the RPC first, then the database and the pool).
    func stop() async {
        stopping.finish()
        _ = try? await running.value
    }
}

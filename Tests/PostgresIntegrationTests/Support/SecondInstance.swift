import Composition
import Foundation
import GRPCCore
import HSM
import HSMTestSupport
import PKCS11
import RPC
import ServiceLifecycle

/// Another instance of the service over an RPC harness's schema and token, in this process:
/// its own runtime (pool, database clients, caches, listeners) and its own server port, served
/// as `serve` serves it — what a second host running Custos is to the first.
struct SecondInstance: Sendable {
    let services: CustosServices
    /// A harness value aimed at this instance's port (for ``RPCHarness/withClient(_:_:)``).
    let rpc: RPCHarness

    /// Whether every listener that carries other instances' changes holds its connection.
    var isListening: Bool {
        services.graph.changes.isListening && services.keyring.isListeningForKeyStates && services.apiKeys.isListening
    }

    /// Runs `body` with the second instance serving; stops it (gracefully) afterwards.
    /// - Parameters:
    ///   - pool: its tokens (by default the first instance's one token).
    ///   - module: its first token's module, for tests that inject faults (by default a copy of
    ///     its own).
    static func with<R: Sendable>(
        beside first: RPCHarness, settings: RPCSettings = RPCSettings(), verification: VerificationGraph.Settings? = nil,
        pool: HSMConfiguration? = nil, module: PKCS11Module? = nil,
        _ body: @Sendable (SecondInstance) async throws -> R
    ) async throws -> R {
        let custody = first.custody
        let logger = custody.logs.logger
        let started = try await CustosRuntime.start(
            pool: pool ?? custody.token.configuration(), database: custody.settings.configuration(role: .service, schema: custody.schema),
            custody: CustodyGraph.Settings(auditAnchorPath: custody.anchorPath, keyEnvironment: "test", trustedEscrowKeys: custody.trustedEscrowKeys),
            // Its own copy of the module: PKCS#11 login state is per loaded library, and a
            // second instance is a second process. The first instance's runtime does not check
            // the root keys either (harness runtimes start with `verifyRootKeys: false`).
            options: CustosRuntime.Options(logger: logger, verifyRootKeys: false, module: try module ?? TestToken.isolatedModule())
        )
        do {
            let services = CustosServices(started.runtime.verification(verification ?? settings.verification, logger: logger), settings: settings, logger: logger)
            let endpoint = ServerEndpoint(host: "127.0.0.1", port: 0, tls: .init(
                certificateChain: first.certificates.path("server.pem"), privateKey: first.certificates.path("server.key"),
                clientCA: first.certificates.path("ca.pem")
            ))
            let served = try await CustosServer.prepare(services, endpoint: endpoint, metrics: nil, logger: logger)
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: served.members, logger: logger))
            let result = try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let outcome: Result<R, any Error>
                do {
                    guard let address = await served.listening(), let port = address.split(separator: ":").last.flatMap({ Int($0) }) else {
                        throw RPCError(code: .internalError, message: "the second instance stopped before it listened")
                    }
                    let rpc = RPCHarness(custody: custody, services: services, certificates: first.certificates, port: port)
                    outcome = .success(try await body(SecondInstance(services: services, rpc: rpc)))
                } catch {
                    outcome = .failure(error)
                }
                await group.triggerGracefulShutdown()
                var groupError: (any Error)?
                do { try await tasks.waitForAll() } catch { groupError = error }
                let result = try outcome.get()
                if let groupError { throw groupError }
                return result
            }
            await started.shutdown()
            return result
        } catch {
            await started.shutdown()
            throw error
        }
    }

    /// Waits (up to a minute, generous on a loaded machine) until every listener is connected:
    /// before that the instance is in its fallback (short cache lifetimes), not the path tested.
    func waitUntilListening() async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while !isListening, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        guard isListening else { throw RPCError(code: .deadlineExceeded, message: "the second instance's listeners did not connect within a minute") }
    }
}

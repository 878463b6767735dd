// GRPCServer in a swift-service-lifecycle ServiceGroup (docs/rpc.md §d). grpc-swift-extras'
// GRPCServiceLifecycle does this upstream; it is not available here, and the wrapper is short.
public import GRPCCore
public import ServiceLifecycle

/// Runs a `GRPCServer` as a `Service`: `run()` serves until the server stops; a graceful
/// shutdown of the group first marks every health status NOT_SERVING and ends the health
/// `Watch` streams (else they would hold the shutdown up forever), then asks the server to
/// stop accepting RPCs and finish the ones in flight. Cancelling `run()` stops the server at
/// once.
public struct GRPCServerService<Transport: ServerTransport>: Service {
    let server: GRPCServer<Transport>
    let health: HealthStatusRegistry?

    public init(server: GRPCServer<Transport>, health: HealthStatusRegistry? = nil) {
        self.server = server
        self.health = health
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            health?.enterTerminalState()
            server.beginGracefulShutdown()
        }
    }
}

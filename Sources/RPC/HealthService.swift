public import GRPCCore

/// The standard gRPC health service (`grpc.health.v1.Health`, vendored in
/// `proto/grpc/health/v1/health.proto`) over a ``HealthStatusRegistry``.
///
/// - `Check`: the service's status; NOT_FOUND for an unknown name. `""` is the whole server.
/// - `List`: every known service; RESOURCE_EXHAUSTED past 100 (as the proto specifies).
/// - `Watch`: the current status at once, then every change; SERVICE_UNKNOWN for an unknown
///   name without ending the call. Ends when the registry enters its terminal state (server
///   shutdown) or the RPC is cancelled (client gone, deadline, server shutdown).
///
/// It needs no authentication: it says nothing about tenants, keys or data, and load
/// balancers and orchestrators call it without credentials.
public struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
    /// The most services `List` returns (the proto's limit).
    public static let listLimit = 100

    public let registry: HealthStatusRegistry

    public init(registry: HealthStatusRegistry) {
        self.registry = registry
    }

    public func check(
        request: Grpc_Health_V1_HealthCheckRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthCheckResponse {
        guard let status = registry.status(of: request.service) else {
            throw RPCError(code: .notFound, message: "unknown service")
        }
        return .with { $0.status = Self.servingStatus(status) }
    }

    public func list(
        request: Grpc_Health_V1_HealthListRequest,
        context: ServerContext
    ) async throws -> Grpc_Health_V1_HealthListResponse {
        let all = registry.all()
        guard all.count <= Self.listLimit else {
            throw RPCError(code: .resourceExhausted, message: "more than \(Self.listLimit) services")
        }
        return .with { response in
            for (name, status) in all {
                response.statuses[name] = .with { $0.status = Self.servingStatus(status) }
            }
        }
    }

    public func watch(
        request: Grpc_Health_V1_HealthCheckRequest,
        response: RPCWriter<Grpc_Health_V1_HealthCheckResponse>,
        context: ServerContext
    ) async throws {
        let (statuses, stop) = registry.watch(request.service)
        // A client that goes away cancels the RPC through `context.cancellation`, not by
        // cancelling this task: without the handler the watch would outlive the call and hold
        // up a graceful server shutdown.
        try await withRPCCancellationHandler {
            for await status in statuses {
                try await response.write(.with { $0.status = status.map(Self.servingStatus) ?? .serviceUnknown })
            }
        } onCancelRPC: {
            stop()
        }
    }

    static func servingStatus(_ status: HealthStatusRegistry.Status) -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
        switch status {
        case .serving: .serving
        case .notServing: .notServing
        }
    }
}

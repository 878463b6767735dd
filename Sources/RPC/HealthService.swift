public import GRPCCore

/// The standard gRPC health service (`grpc.health.v1.Health`, vendored in
/// `proto/grpc/health/v1/health.proto`) over a ``HealthStatusRegistry``.
///
/// - `Check`: the service's status; NOT_FOUND for an unknown name. `""` is the whole server.
/// - `List`: every known service; RESOURCE_EXHAUSTED past 100 (as the proto specifies).
/// - `Watch`: the current status at once, then every change; SERVICE_UNKNOWN for an unknown
///   name without ending the call. Ends when the registry enters its terminal state (server
///   shutdown) or the RPC is cancelled (client gone, deadline, server shutdown), and with
///   UNAUTHENTICATED when the certificate the caller presented is revoked meanwhile.
///
/// It needs no role: it says nothing about tenants, keys or data, and load balancers and
/// orchestrators call it without credentials. A revoked certificate is refused, though
/// (``Authenticator``): at the call's start, and for a `Watch`, whenever it is revoked later.
public struct HealthService: Grpc_Health_V1_Health.SimpleServiceProtocol {
    /// The most services `List` returns (the proto's limit).
    public static let listLimit = 100

    public let registry: HealthStatusRegistry
    /// Ends a `Watch` whose caller's certificate is revoked; `nil`: no certificates to check.
    let revocations: Authenticator?

    public init(registry: HealthStatusRegistry, revocations: Authenticator? = nil) {
        self.registry = registry
        self.revocations = revocations
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
        defer { stop() }
        // The certificate checked at the call's start may be revoked while the stream is open:
        // a revoked front-end must not keep learning the instance's state (attack review,
        // round 5), so a second task waits for that; whichever ends first ends the call. The
        // serial is read from the connection, as the interceptor does: the stream's body runs
        // after the interceptor returned, outside its `Caller.current`.
        let serial = CallerCertificate(verifiedPeerOf: context)?.serial
        let revocations = revocations
        // A client that goes away cancels the RPC through `context.cancellation`, not by
        // cancelling this task: without the handler the watch would outlive the call and hold
        // up a graceful server shutdown.
        try await withRPCCancellationHandler {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await status in statuses {
                        try await response.write(.with { $0.status = status.map(Self.servingStatus) ?? .serviceUnknown })
                    }
                }
                if let serial, let revocations {
                    group.addTask {
                        guard await revocations.waitUntilRevoked(serial) else { return }
                        throw RPCError(code: .unauthenticated, message: "client certificate revoked")
                    }
                }
                try await group.next()
                group.cancelAll()
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

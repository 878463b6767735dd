import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

/// Runs `body` with a client connected to a real HTTP/2 server on 127.0.0.1 (port 0: the
/// kernel picks one). The server stops gracefully when `body` returns: end streaming calls first.
func withLoopbackServer<Result: Sendable>(
    services: [any RegistrableRPCService],
    interceptors: [any ServerInterceptor] = [],
    serverSecurity: HTTP2ServerTransport.Posix.TransportSecurity = .plaintext,
    serverConfig: HTTP2ServerTransport.Posix.Config = .defaults,
    clientSecurity: HTTP2ClientTransport.Posix.TransportSecurity = .plaintext,
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
) async throws -> Result {
    let transport = HTTP2ServerTransport.Posix(
        address: .ipv4(host: "127.0.0.1", port: 0),
        transportSecurity: serverSecurity,
        config: serverConfig
    )
    return try await withLoopbackServer(
        transport: transport, services: services, interceptors: interceptors, clientSecurity: clientSecurity, body
    )
}

/// The same over a server transport made elsewhere (e.g. the production
/// `CustosServer.transport`), which must listen on 127.0.0.1.
func withLoopbackServer<Result: Sendable>(
    transport: HTTP2ServerTransport.Posix,
    services: [any RegistrableRPCService],
    interceptors: [any ServerInterceptor] = [],
    clientSecurity: HTTP2ClientTransport.Posix.TransportSecurity,
    _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> Result
) async throws -> Result {
    try await withGRPCServer(transport: transport, services: services, interceptors: interceptors) { server in
        guard let port = try await server.listeningAddress?.ipv4?.port else {
            throw RPCError(code: .internalError, message: "server has no IPv4 listening address")
        }
        let client = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port),
            transportSecurity: clientSecurity
        )
        return try await withGRPCClient(transport: client) { client in
            try await body(client)
        }
    }
}

/// Counts the RPCs that reached the interceptor chain (so: that the transport let through).
final class CountingInterceptor: ServerInterceptor {
    let count = Atomic<Int>(0)

    func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        count.add(1, ordering: .relaxed)
        return try await next(request, context)
    }
}

/// Waits until `condition` holds, up to `timeout`.
func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

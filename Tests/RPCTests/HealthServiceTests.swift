import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import Testing

@Suite("grpc.health.v1 over a real loopback server")
struct HealthServiceTests {
    typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

    @Test("Check: SERVING, then NOT_SERVING after a flip; an unknown service is NOT_FOUND")
    func check() async throws {
        let registry = HealthStatusRegistry(statuses: ["": .serving, "custos.v1.Verification": .serving])
        try await withLoopbackServer(services: [HealthService(registry: registry)]) { client in
            let health = Grpc_Health_V1_Health.Client(wrapping: client)
            let verification = Grpc_Health_V1_HealthCheckRequest.with { $0.service = "custos.v1.Verification" }

            let serving = try await health.check(verification).status
            #expect(serving == .serving)
            let server = try await health.check(.with { $0.service = "" }).status
            #expect(server == .serving)

            registry.setStatus(.notServing, for: "custos.v1.Verification")
            let flipped = try await health.check(verification).status
            #expect(flipped == .notServing)

            let error = await #expect(throws: RPCError.self) {
                try await health.check(.with { $0.service = "custos.v1.NoSuchService" })
            }
            #expect(error?.code == .notFound)

            registry.removeStatus(for: "custos.v1.Verification")
            let removed = await #expect(throws: RPCError.self) { try await health.check(verification) }
            #expect(removed?.code == .notFound)
        }
    }

    @Test("List: every known service and its status")
    func list() async throws {
        let registry = HealthStatusRegistry(statuses: ["": .serving, "hsm": .notServing])
        try await withLoopbackServer(services: [HealthService(registry: registry)]) { client in
            let statuses = try await Grpc_Health_V1_Health.Client(wrapping: client).list(.init()).statuses
            #expect(statuses.mapValues(\.status) == ["": .serving, "hsm": .notServing])
        }
    }

    @Test("Watch: the current status at once, then each change; SERVICE_UNKNOWN keeps the call open; the terminal state ends it")
    func watch() async throws {
        let registry = HealthStatusRegistry()
        try await withLoopbackServer(services: [HealthService(registry: registry)]) { client in
            let health = Grpc_Health_V1_Health.Client(wrapping: client)
            let seen = try await health.watch(.with { $0.service = "postgres" }) { response in
                var seen: [Status] = []
                for try await message in response.messages {
                    seen.append(message.status)
                    switch seen.count {
                    case 1: registry.setStatus(.serving, for: "postgres")
                    case 2: registry.setStatus(.serving, for: "postgres")  // no change: no message
                        registry.setStatus(.notServing, for: "postgres")
                    case 3: registry.setStatus(.serving, for: "postgres")
                    case 4: registry.enterTerminalState()
                    default: break
                    }
                }
                return seen
            }
            #expect(seen == [.serviceUnknown, .serving, .notServing, .serving, .notServing])
            #expect(registry.isTerminal)
            registry.setStatus(.serving, for: "postgres")
            #expect(registry.status(of: "postgres") == .notServing, "updates after the terminal state are ignored")
            let drained = try await eventually { registry.watcherCount == 0 }
            #expect(drained)
        }
    }

    @Test("A client that stops watching leaves no watcher behind")
    func watchCancelled() async throws {
        let registry = HealthStatusRegistry()
        try await withLoopbackServer(services: [HealthService(registry: registry)]) { client in
            let health = Grpc_Health_V1_Health.Client(wrapping: client)
            let first = try await health.watch(.with { $0.service = "" }) { response -> Status? in
                for try await message in response.messages { return message.status }
                return nil
            }
            #expect(first == .serving)
            let drained = try await eventually { registry.watcherCount == 0 }
            #expect(drained)
        }
    }

    /// grpc-swift-nio-transport 2.9.2 does not answer RESOURCE_EXHAUSTED here: its deframer
    /// throws RESOURCE_EXHAUSTED, but the server's stream state machine turns every decode error
    /// into "reset the stream" (GRPCStreamStateMachine, `forwardErrorAndClose_serverOnly`), so
    /// the client sees UNAVAILABLE. The RPC may already have started on its HEADERS, so
    /// interceptors may run; the handler never gets the message. docs/rpc.md §(c).
    @Test("A request over maxRequestPayloadSize is refused: the stream is reset (UNAVAILABLE), the handler never runs")
    func oversizedRequest() async throws {
        let registry = HealthStatusRegistry()
        let counter = CountingInterceptor()
        let config = HTTP2ServerTransport.Posix.Config.defaults { $0.rpc.maxRequestPayloadSize = 1024 }
        try await withLoopbackServer(
            services: [HealthService(registry: registry)],
            interceptors: [counter],
            serverConfig: config
        ) { client in
            let health = Grpc_Health_V1_Health.Client(wrapping: client)

            let small = await #expect(throws: RPCError.self) {
                try await health.check(.with { $0.service = String(repeating: "a", count: 1000) })
            }
            #expect(small?.code == .notFound, "1,000 bytes: within the limit, the service answers")
            #expect(counter.count.load(ordering: .relaxed) == 1)

            let large = await #expect(throws: RPCError.self) {
                try await health.check(.with { $0.service = String(repeating: "a", count: 2000) })
            }
            #expect(large?.code == .unavailable, "\(String(describing: large))")
            // Whether the interceptors ran for it is a race between dispatching the HEADERS and
            // the reset: never rely on an interceptor to see (or not see) an oversized call.
            #expect((1...2).contains(counter.count.load(ordering: .relaxed)))

            // The connection is still usable afterwards.
            let after = try await health.check(.with { $0.service = "" }).status
            #expect(after == .serving)
        }
    }
}

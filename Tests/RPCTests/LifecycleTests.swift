import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import NIOCore
import NIOPosix
import Prometheus
import RPC
import ServiceLifecycle
import Testing

/// docs/rpc.md §(d).
@Suite("GRPCServer as a Service; the /metrics endpoint")
struct LifecycleTests {
    @Test("A graceful shutdown of the ServiceGroup ends health watches with NOT_SERVING and stops the server")
    func gracefulShutdown() async throws {
        let registry = HealthStatusRegistry()
        let server = GRPCServer(
            transport: HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext),
            services: [HealthService(registry: registry)]
        )
        let group = ServiceGroup(
            services: [GRPCServerService(server: server, health: registry)],
            logger: Logger(label: "custos.rpc.tests")
        )
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let port = try #require(try await server.listeningAddress?.ipv4?.port)
            let client = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
            let seen = try await withGRPCClient(transport: client) { client in
                try await Grpc_Health_V1_Health.Client(wrapping: client).watch(.with { $0.service = "" }) { response in
                    var seen: [Grpc_Health_V1_HealthCheckResponse.ServingStatus] = []
                    for try await message in response.messages {
                        seen.append(message.status)
                        if seen.count == 1 { await group.triggerGracefulShutdown() }
                    }
                    return seen
                }
            }
            #expect(seen == [.serving, .notServing])
            try await tasks.next()  // the group's run() returned: the server stopped
        }
        await #expect(throws: (any Error).self) { try await server.listeningAddress }
    }

    @Test("GET /metrics serves the Prometheus registry and the process's CPU time; other paths are 404")
    func metricsEndpoint() async throws {
        let registry = PrometheusCollectorRegistry()
        let requests = registry.makeCounter(
            descriptor: MetricNameDescriptor(namespace: "custos", subsystem: "rpc", metricName: "requests", unitName: "total", helpText: "RPCs handled"),
            labels: [("service", "health")]
        )
        requests.increment(by: Int64(3))
        let metrics = try await MetricsHTTPServer.bind(host: "127.0.0.1", port: 0, registry: registry)
        let port = try #require(metrics.port)
        let group = ServiceGroup(services: [metrics], logger: Logger(label: "custos.rpc.tests"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }

            let ok = try await httpGet(port: port, path: "/metrics")
            #expect(ok.hasPrefix("HTTP/1.1 200 OK"))
            #expect(ok.contains("content-type: text/plain; version=0.0.4"))
            #expect(ok.contains(#"custos_rpc_requests_total{service="health"} 3"#))
            // The process's CPU time, which `custos-bench rpc --server` reads per phase: a
            // counter that a second scrape, after some work, finds no smaller.
            let first = try #require(Self.cpuSeconds(in: ok))
            #expect(first > 0)
            var spin: UInt64 = 0
            for index in 0..<2_000_000 { spin &+= UInt64(index) &* 2_654_435_761 }
            #expect(spin != 1)
            let second = try #require(Self.cpuSeconds(in: try await httpGet(port: port, path: "/metrics")))
            #expect(second >= first)

            let missing = try await httpGet(port: port, path: "/")
            #expect(missing.hasPrefix("HTTP/1.1 404 Not Found"))

            await group.triggerGracefulShutdown()
            try await tasks.next()
        }
    }

    /// The value of `process_cpu_seconds_total` in a /metrics response, if it has the sample.
    static func cpuSeconds(in response: String) -> Double? {
        response.split(separator: "\n").first { $0.hasPrefix(ProcessCPUTime.metricName + " ") }
            .flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }
    }

    /// A plain HTTP/1.1 GET over a NIO socket; returns the whole response as text.
    private func httpGet(port: Int, path: String) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: "GET \(path) HTTP/1.1\r\nhost: localhost\r\n\r\n"))
            var response = ""
            for try await var chunk in inbound {
                response += chunk.readString(length: chunk.readableBytes) ?? ""
            }
            return response
        }
    }
}

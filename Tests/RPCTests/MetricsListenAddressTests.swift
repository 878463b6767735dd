import Logging
import Prometheus
import RPC
import ServiceLifecycle
import Testing

@Suite("The /metrics listen address")
struct MetricsListenAddressTests {
    @Test("/metrics listens on loopback unless configured or overridden, never on the RPC's address by inference")
    func loopbackByDefault() async throws {
        #expect(MetricsHTTPServer.listenHost(override: nil, configured: nil) == "127.0.0.1")
        #expect(MetricsHTTPServer.listenHost(override: nil, configured: "10.0.0.5") == "10.0.0.5")
        #expect(MetricsHTTPServer.listenHost(override: "::1", configured: "10.0.0.5") == "::1")
        let metrics = try await MetricsHTTPServer.bind(
            host: MetricsHTTPServer.listenHost(override: nil, configured: nil), port: 0, registry: PrometheusCollectorRegistry()
        )
        let group = ServiceGroup(services: [metrics], logger: Logger(label: "custos.rpc.tests"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(metrics.host == "127.0.0.1")
            await group.triggerGracefulShutdown()
            try await tasks.next()
        }
    }
}

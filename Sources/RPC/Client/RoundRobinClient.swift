public import GRPCCore
public import GRPCNIOTransportHTTP2Posix

/// How a Custos client spreads calls over several instances and survives losing one
/// (docs/operations.md, "Two instances over one PostgreSQL…"):
///
/// - **Round robin over healthy connections.** Each address is a subchannel; calls go only to
///   connected ones. A connection that fails (refused, reset by a killed instance, GOAWAY from
///   one shutting down) takes its address out; the transport reconnects with backoff (100 ms
///   doubling to 2 s, ``reconnectBackoff``) — the probe — and the address is back once it
///   connects.
/// - **Never a duplicated write.** A call whose stream could not be opened on the chosen
///   connection (it never left the client) is moved to another connection by grpc-swift
///   itself. Past that point only ``idempotentMethods`` are sent again, on UNAVAILABLE
///   (``retryPolicy``): Enrol, Verify and every write may have run on the instance that died,
///   so their UNAVAILABLE goes to the caller, who can look the outcome up.
/// - **Health checks** (``healthChecked(_:security:timeout:methodConfigs:)``): an instance whose
///   `grpc.health.v1` status is NOT_SERVING (shutting down, or taken out by its operator) gets
///   no calls, though it still accepts connections.
public enum RoundRobinClient {
    /// Calls that change nothing a second run would change again: reads, the health check and
    /// `Ping`. (`SignDelivery` and `ExportSubject` are left out: each use is counted or audited.)
    public static let idempotentMethods: [MethodConfig.Name] = [
        .init(service: "grpc.health.v1.Health", method: "Check"),
        .init(service: "custos.v1.APIKeys", method: "WhoAmI"),
        .init(service: "custos.v1.APIKeys", method: "ListKeys"),
        .init(service: "custos.v1.Verification", method: "GetSession"),
        .init(service: "custos.v1.Verification", method: "Ping"),
        .init(service: "custos.v1.Webhooks", method: "PublicKeys"),
        .init(service: "custos.v1.Admin", method: "ListTenants"),
        .init(service: "custos.v1.Admin", method: "ListKeys"),
        .init(service: "custos.v1.Admin", method: "ListAPIKeys"),
        .init(service: "custos.v1.Admin", method: "AuditTail"),
        .init(service: "custos.v1.Admin", method: "AuditVerify"),
        .init(service: "custos.v1.Admin", method: "HSMStatus"),
        .init(service: "custos.v1.Admin", method: "KeyStatus"),
        .init(service: "custos.v1.Admin", method: "GetTenantPolicy"),
    ]

    /// Up to four more attempts 100 ms to 1 s apart (about 1.5 s in all): long enough for the
    /// reset of a killed instance's connection to take it out of the rotation even on a loaded
    /// machine (with three attempts within 350 ms, 2 of 100 reads failed in CI while 130 suites
    /// ran), and within the 2 s gap issue 13 allows.
    public static let retryPolicy = RetryPolicy(
        maxAttempts: 5, initialBackoff: .milliseconds(100), maxBackoff: .seconds(1), backoffMultiplier: 2,
        retryableStatusCodes: [.unavailable]
    )

    /// How soon a lost instance is tried again (grpc-swift's default starts at 1 s and grows to
    /// 2 min: an instance restarted in seconds would wait minutes for traffic).
    public static let reconnectBackoff = HTTP2ClientTransport.Config.Backoff(initial: .milliseconds(100), max: .seconds(2), multiplier: 2, jitter: 0.2)

    /// Round robin, and ``retryPolicy`` for ``idempotentMethods``.
    /// - Parameters:
    ///   - timeout: the deadline of every call ``idempotentMethods`` and `methodConfigs` do not
    ///     set (`nil`: none).
    ///   - methodConfigs: the caller's own, more specific configurations (a service's deadline,
    ///     one long call's); grpc-swift uses the one naming the method over one naming its service.
    public static func serviceConfig(timeout: Duration? = nil, methodConfigs: [MethodConfig] = []) -> ServiceConfig {
        let named = Set(methodConfigs.flatMap(\.names))
        let retried = idempotentMethods.filter { !named.contains($0) }
        // The retried methods keep the deadline their service has in `methodConfigs`.
        let serviceTimeouts = Dictionary(
            methodConfigs.flatMap { config in config.names.filter { $0.method.isEmpty }.map { ($0.service, config.timeout) } },
            uniquingKeysWith: { first, _ in first }
        )
        var configs = methodConfigs
        for name in retried {
            configs.append(MethodConfig(names: [name], timeout: serviceTimeouts[name.service] ?? timeout, executionPolicy: .retry(retryPolicy)))
        }
        if let timeout { configs.append(MethodConfig(names: [MethodConfig.Name(service: "")], timeout: timeout)) }
        return ServiceConfig(methodConfig: configs, loadBalancingConfig: [.roundRobin])
    }

    /// Round robin over the instances of `addresses` that report SERVING on the standard health
    /// service (``HealthCheckedTransport``), configured as above: what a front-end in front of
    /// several instances uses (docs/operations.md).
    /// - Throws: grpc-swift's error when no resolver takes an address.
    public static func healthChecked(
        _ addresses: ServiceAddresses, security: HTTP2ClientTransport.Posix.TransportSecurity, timeout: Duration? = nil,
        methodConfigs: [MethodConfig] = []
    ) throws -> HealthCheckedTransport {
        try HealthCheckedTransport(addresses, security: security, serviceConfig: serviceConfig(timeout: timeout, methodConfigs: methodConfigs))
    }

    /// A transport over every address of `addresses`, configured as above (grpc-swift's round
    /// robin: it skips instances it cannot reach, not those that report NOT_SERVING).
    /// - Throws: grpc-swift's error when no resolver takes the target.
    public static func transport(
        _ addresses: ServiceAddresses, security: HTTP2ClientTransport.Posix.TransportSecurity, timeout: Duration? = nil,
        methodConfigs: [MethodConfig] = []
    ) throws -> HTTP2ClientTransport.Posix {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff = reconnectBackoff
        return try HTTP2ClientTransport.Posix(
            target: addresses.target, transportSecurity: security, config: config,
            serviceConfig: serviceConfig(timeout: timeout, methodConfigs: methodConfigs)
        )
    }
}

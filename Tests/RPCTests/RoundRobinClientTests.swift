import GRPCCore
import RPC
import Testing

/// What the round-robin client is configured to do with several addresses, without a server:
/// the failover itself is RoundRobinFailoverTests (two real instances, one killed).
@Suite("Round-robin client: addresses and service config")
struct RoundRobinClientTests {
    @Test("Several addresses parse to one each; a bad one or a mix of families is named")
    func addresses() throws {
        let two = try ServiceAddresses(parsing: "10.0.0.1:7443, 10.0.0.2:7444")
        #expect(two.addresses.map(\.port) == [7443, 7444])
        #expect(two.description == "10.0.0.1:7443,10.0.0.2:7444")
        #expect(try ServiceAddresses(parsing: "[::1]:7443").hosts == ["::1"])
        #expect(try ServiceAddresses(parsing: "custos.internal:7443").hosts == ["custos.internal"])
        #expect(throws: ServiceAddressError.notHostAndPort("10.0.0.2")) { try ServiceAddresses(parsing: "10.0.0.1:1,10.0.0.2") }
        #expect(throws: ServiceAddressError.severalNeedOneIPFamily("custos.internal:1,10.0.0.2:2")) {
            try ServiceAddresses(parsing: "custos.internal:1,10.0.0.2:2")
        }
    }

    @Test("Round robin; reads retried on UNAVAILABLE; Enrol, Verify and writes never retried")
    func serviceConfig() {
        let config = RoundRobinClient.serviceConfig(timeout: .seconds(30))
        #expect(config.loadBalancingConfig == [.roundRobin])
        func policy(_ service: String, _ method: String) -> MethodConfig? {
            let name = MethodConfig.Name(service: service, method: method)
            return config.methodConfig.first { $0.names.contains(name) }
        }
        #expect(policy("custos.v1.APIKeys", "WhoAmI")?.executionPolicy?.retry?.retryableStatusCodes == [.unavailable])
        #expect(policy("custos.v1.Admin", "ListTenants")?.executionPolicy?.retry != nil)
        for (service, method) in [
            ("custos.v1.Verification", "Enrol"), ("custos.v1.Verification", "Verify"), ("custos.v1.Verification", "CreateSession"),
            ("custos.v1.Admin", "CreateTenant"), ("custos.v1.Admin", "RevokeCertificate"), ("custos.v1.Webhooks", "SignDelivery"),
        ] {
            #expect(policy(service, method) == nil, "\(service)/\(method) must not be retried")
        }
    }

    @Test("A caller's service deadline carries over to its retried reads; its own method configs win")
    func callerConfigs() {
        let admin = MethodConfig(names: [MethodConfig.Name(service: "custos.v1.Admin")], timeout: .seconds(60))
        let long = MethodConfig(names: [MethodConfig.Name(service: "custos.v1.Admin", method: "AuditTail")], timeout: .seconds(600))
        let config = RoundRobinClient.serviceConfig(methodConfigs: [admin, long])
        let listTenants = config.methodConfig.first { $0.names.contains(MethodConfig.Name(service: "custos.v1.Admin", method: "ListTenants")) }
        #expect(listTenants?.timeout == .seconds(60))
        let auditTail = config.methodConfig.filter { $0.names.contains(MethodConfig.Name(service: "custos.v1.Admin", method: "AuditTail")) }
        #expect(auditTail == [long])
    }
}

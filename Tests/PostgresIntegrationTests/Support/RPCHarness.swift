import Composition
import Custody
import CustosModel
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSMTestSupport
import RPC
import ServiceLifecycle
import Storage

/// The real service on loopback with mutual TLS (certificates from scripts/make-ca), over a
/// custody harness, served as `serve` serves it (``CustosServer/prepare(_:endpoint:metrics:logger:)``):
/// what a front-end, an officer or an attacker's client meets.
struct RPCHarness: Sendable {
    let custody: CustodyHarness
    let services: CustosServices
    let certificates: TestCertificates
    let port: Int

    /// Runs `body` with the server up; stops it (gracefully) and the harness afterwards.
    static func with<R: Sendable>(
        _ name: String, settings: RPCSettings = RPCSettings(), custody: CustodyHarness? = nil,
        _ body: @Sendable (RPCHarness) async throws -> R
    ) async throws -> R {
        let custody = if let custody { custody } else { try await CustodyHarness.make(name) }
        let logger = custody.logs.logger
        do {
            let certificates = try TestCertificates.get()
            let services = CustosServices(custody.started.runtime.verification(settings.verification, logger: logger), settings: settings, logger: logger)
            let endpoint = ServerEndpoint(host: "127.0.0.1", port: 0, tls: .init(
                certificateChain: certificates.path("server.pem"), privateKey: certificates.path("server.key"), clientCA: certificates.path("ca.pem")
            ))
            // The members `serve` adds to its runtime's group, in a group of their own: the
            // custody harness's runtime is already running (and may be shared by the test).
            let served = try await CustosServer.prepare(services, endpoint: endpoint, metrics: nil, logger: logger)
            let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: served.members, logger: logger))
            let result = try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                let outcome: Result<R, any Error>
                do {
                    guard let address = await served.listening(), let port = address.split(separator: ":").last.flatMap({ Int($0) }) else {
                        throw RPCError(code: .internalError, message: "the server stopped before it listened")
                    }
                    let harness = RPCHarness(custody: custody, services: services, certificates: certificates, port: port)
                    outcome = .success(try await body(harness))
                } catch {
                    outcome = .failure(error)
                }
                await group.triggerGracefulShutdown()
                // The body's error wins over the group's.
                var groupError: (any Error)?
                do { try await tasks.waitForAll() } catch { groupError = error }
                let result = try outcome.get()
                if let groupError { throw groupError }
                return result
            }
            await custody.shutdown()
            return result
        } catch {
            await custody.shutdown()
            throw error
        }
    }

    enum Identity: String {
        case alice = "officer-alice", bob = "officer-bob", frontend = "frontend-demo", otherCA = "other-client"
        /// A front-end allowed one tenant only, one that no test creates.
        case narrow = "frontend-narrow"
    }

    /// A client presenting `identity`'s certificate (or none).
    func withClient<R: Sendable>(_ identity: Identity?, _ body: (GRPCClient<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
        let ca = certificates.path("ca.pem")
        let security: HTTP2ClientTransport.Posix.TransportSecurity = if let identity {
            RPCClientTLS(
                certificateChain: certificates.path("\(identity.rawValue).pem"), privateKey: certificates.path("\(identity.rawValue).key"), serverCA: ca
            ).transportSecurity
        } else {
            .tls { $0.trustRoots = .certificates([.file(path: ca, format: .pem)]) }
        }
        let transport = try HTTP2ClientTransport.Posix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: security)
        return try await withGRPCClient(transport: transport) { try await body($0) }
    }

    /// Runs `call` and returns the status code it failed with (nil: it succeeded).
    static func code(_ call: () async throws -> Void) async -> RPCError.Code? {
        do {
            try await call()
            return nil
        } catch let error as RPCError {
            return error.code
        } catch {
            return .unknown
        }
    }

    static let fast = CallOptions.defaults.with { $0.timeout = .seconds(20) }
}

extension CallOptions {
    fileprivate func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }
}

/// Metadata helpers: the tenant-scope headers a front-end sends.
func tenantMetadata(_ tenant: String) -> Metadata {
    var metadata = Metadata()
    metadata.addString(tenant, forKey: "custos-tenant")
    return metadata
}

func bearer(_ key: String, tenant: String? = nil) -> Metadata {
    var metadata = Metadata()
    metadata.addString("Bearer \(key)", forKey: "authorization")
    if let tenant { metadata.addString(tenant, forKey: "custos-tenant") }
    return metadata
}

/// A session of `subject` created, opened and consented to through the Verification RPC, as a
/// front-end does before Enrol or Verify. - Returns: its id.
func consentedSession(
    _ verification: Custos_V1_Verification.Client<HTTP2ClientTransport.Posix>, scope: Metadata, subject: String = "cand-1"
) async throws -> String {
    let created = try await verification.createSession(.with { $0.subjectExternalID = subject }, metadata: scope)
    let opened = try await verification.openGateway(.with { $0.gatewayLink = created.gatewayLink }, metadata: scope)
    _ = try await verification.recordConsent(.with { $0.sessionID = opened.sessionID; $0.noticeVersion = opened.noticeVersion }, metadata: scope)
    return opened.sessionID
}

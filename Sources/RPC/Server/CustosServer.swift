import GRPCCore
public import GRPCNIOTransportHTTP2Posix
public import Logging
import Metrics
public import Prometheus
public import ServiceLifecycle

/// Where and how the RPC listens.
public struct ServerEndpoint: Sendable {
    /// PEM files: the server's certificate chain and key, and the CA that client certificates
    /// must chain to. `nil` only for plaintext on loopback, asked for explicitly (development).
    public struct TLSFiles: Sendable {
        public var certificateChain: String
        public var privateKey: String
        public var clientCA: String

        public init(certificateChain: String, privateKey: String, clientCA: String) {
            self.certificateChain = certificateChain
            self.privateKey = privateKey
            self.clientCA = clientCA
        }
    }

    public var host: String
    public var port: Int
    public var tls: TLSFiles?

    public init(host: String, port: Int, tls: TLSFiles?) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    var isLoopback: Bool { ["127.0.0.1", "::1", "localhost"].contains(host) }
}

/// Runs the RPC as a swift-service-lifecycle group: the gRPC server (graceful shutdown on
/// SIGTERM/SIGINT: health goes NOT_SERVING, in-flight calls finish), the `/metrics` endpoint
/// and the background listeners.
public enum CustosServer {
    /// The transport's own message limit: above it the stream is reset (the client sees
    /// UNAVAILABLE). ``RequestSizeLimit`` answers RESOURCE_EXHAUSTED below it.
    public static let transportLimit = 1024 * 1024

    public enum ConfigurationError: Error, CustomStringConvertible {
        case plaintextOffLoopback(String)

        public var description: String {
            switch self {
            case .plaintextOffLoopback(let host): "plaintext is allowed on loopback only (asked for \(host)); configure TLS"
            }
        }
    }

    public static func transport(_ endpoint: ServerEndpoint) throws -> HTTP2ServerTransport.Posix {
        let security: HTTP2ServerTransport.Posix.TransportSecurity
        if let tls = endpoint.tls {
            security = .mTLS(
                certificateChain: [.file(path: tls.certificateChain, format: .pem)],
                privateKey: .file(path: tls.privateKey, format: .pem)
            ) { config in
                // `.mTLS` trusts the system roots by default: any public CA's client certificate
                // would pass. Only ours may.
                config.trustRoots = .certificates([.file(path: tls.clientCA, format: .pem)])
                config.clientCertificateVerification = .noHostnameVerification
                config.requireALPN = true
            }
        } else {
            guard endpoint.isLoopback else { throw ConfigurationError.plaintextOffLoopback(endpoint.host) }
            security = .plaintext
        }
        let config = HTTP2ServerTransport.Posix.Config.defaults { $0.rpc.maxRequestPayloadSize = transportLimit }
        let address: GRPCNIOTransportCore.SocketAddress = endpoint.host.contains(":")
            ? .ipv6(host: endpoint.host, port: endpoint.port) : .ipv4(host: endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host, port: endpoint.port)
        return HTTP2ServerTransport.Posix(address: address, transportSecurity: security, config: config)
    }

    /// The RPC's members of a service group — the gRPC server (graceful shutdown: health goes
    /// NOT_SERVING, in-flight calls finish), the background listeners and, when asked for, the
    /// `/metrics` endpoint (bound here, so a busy port fails before anything runs) — for
    /// ``CustosRuntime`` to run after its pool and database.
    public static func prepare(
        _ services: CustosServices, endpoint: ServerEndpoint, metrics: (host: String, port: Int, registry: PrometheusCollectorRegistry)?,
        logger: Logger
    ) async throws -> Served {
        let server = GRPCServer(transport: try transport(endpoint), services: services.services, interceptors: services.interceptors)
        var members: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: GRPCServerService(server: server, health: services.health)),
            .init(service: BackgroundService(services), successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup),
        ]
        if let metrics {
            let http = try await MetricsHTTPServer.bind(host: metrics.host, port: metrics.port, registry: metrics.registry)
            members.append(.init(service: http))
            logger.info("metrics", metadata: ["address": "http://\(metrics.host):\(http.port ?? metrics.port)/metrics"])
        }
        return Served(members: members, server: server, mutualTLS: endpoint.tls != nil, logger: logger)
    }

    /// The prepared RPC: its group members, and a way to learn where it listens.
    public struct Served: Sendable {
        public let members: [ServiceGroupConfiguration.ServiceConfiguration]
        let server: GRPCServer<HTTP2ServerTransport.Posix>
        let mutualTLS: Bool
        let logger: Logger

        /// Waits until the server listens, logs the address and returns it as host:port (`nil`
        /// if the server stopped first).
        public func listening() async -> String? {
            guard let address = try? await server.listeningAddress else { return nil }
            let text = address.ipv4.map { "\($0.host):\($0.port)" } ?? address.ipv6.map { "[\($0.host)]:\($0.port)" } ?? "\(address)"
            logger.notice("serving", metadata: ["address": "\(text)", "tls": "\(mutualTLS ? "mutual" : "plaintext (loopback)")"])
            return text
        }
    }
}

/// The listeners as a service of the group (cancelled at shutdown).
struct BackgroundService: Service {
    let services: CustosServices

    init(_ services: CustosServices) { self.services = services }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await services.runBackground()
        }
    }
}

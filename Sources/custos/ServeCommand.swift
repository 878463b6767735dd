import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import HSM
import Logging
import Metrics
import Prometheus
import RPC
import SecureMemory
import Tokenization
import Verification

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the service: the gRPC API (mutual TLS), /metrics, and the cache listeners.",
        discussion: """
        Reads the rpc section of config.json (scripts/setup writes it, with certificates from its \
        local CA). Stops gracefully on SIGTERM or SIGINT. Logs go to standard error, structured, \
        never with secrets (CUSTOS_LOG_LEVEL=debug|info|notice|warning).
        """
    )

    @OptionGroup var options: LocalOptions
    @Option(help: "Listen on this port instead of the configured one (0: any free port).") var port: Int?
    @Option(help: "Serve /metrics on this port instead of the configured one (0: any free port).") var metricsPort: Int?
    @Option(help: "Serve /metrics on this address instead of the configured one (default 127.0.0.1, whatever the RPC listens on).") var metricsHost: String?
    @Flag(help: "Serve plaintext instead of mutual TLS — on loopback only, for development.") var plaintextLoopback = false
    @Option(help: "Write the bound address (host:port) to this file once listening (for scripts).") var addressFile: String?

    func run() async throws {
        let configuration = try options.loadConfiguration()
        guard let rpc = configuration.rpc else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "no rpc section: run scripts/setup")
        }
        var logger = Logger(label: "custos.serve") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = ProcessInfo.processInfo.environment["CUSTOS_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        // Before any feature arrives: no core dumps, not dumpable (DESIGN §6).
        let hygiene = ProcessHygiene.lockDown()
        logger.info("process hygiene", metadata: ["core_limit_zero": "\(hygiene.coreLimitZero)", "dumpable": "\(hygiene.dumpable)"])

        var tls: ServerEndpoint.TLSFiles?
        if !plaintextLoopback {
            guard let certificate = rpc.serverCertificate, let key = rpc.serverKey, let ca = rpc.caCertificate else {
                throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs serverCertificate, serverKey and caCertificate (or --plaintext-loopback)")
            }
            tls = ServerEndpoint.TLSFiles(certificateChain: certificate, privateKey: key, clientCA: ca)
        }
        let endpoint = ServerEndpoint(host: rpc.host, port: port ?? rpc.port, tls: tls)
        var settings = RPCSettings()
        if let notice = rpc.noticeVersion { settings.noticeVersion = notice }
        if rpc.verificationAttemptsPerSubject != nil || rpc.verificationAttemptWindowSeconds != nil {
            let attempts = rpc.verificationAttemptsPerSubject ?? settings.verificationAttempts.attempts
            let seconds = rpc.verificationAttemptWindowSeconds ?? Int(settings.verificationAttempts.window.components.seconds)
            guard attempts > 0, seconds > 0 else {
                throw ConfigurationError.invalid(path: configuration.source, reason: "verificationAttemptsPerSubject and verificationAttemptWindowSeconds must be positive")
            }
            settings.verificationAttempts = VerificationAttemptLimit(attempts: attempts, window: .seconds(seconds))
        }
        if let bytes = rpc.galleryMemoryBytes {
            guard bytes >= TokenGallery.bytesPerSubject else {
                throw ConfigurationError.invalid(path: configuration.source, reason: "galleryMemoryBytes must hold at least one subject (\(TokenGallery.bytesPerSubject) bytes)")
            }
            settings.galleryMemoryLimit = bytes
        }
        if let subjects = rpc.gallerySubjects {
            guard subjects > 0 else { throw ConfigurationError.invalid(path: configuration.source, reason: "gallerySubjects must be positive") }
            settings.galleryCapacity = subjects
        }
        let addressFile = addressFile
        // Loopback unless an operator opens it on purpose.
        let metricsHost = MetricsHTTPServer.listenHost(override: metricsHost, configured: rpc.metricsHost)
        let metrics = (metricsPort ?? rpc.metricsPort).map { (host: metricsHost, port: $0, registry: registry) }
        // Serves until SIGTERM or SIGINT, then shuts down gracefully: the RPC first, then the
        // database and the pool.
        let runtimeOptions = CustosRuntime.Options(
            logger: makeLogger(), lifetime: .services, gracefulShutdownSignals: [.sigterm, .sigint], stepFault: .crashPointFromEnvironment
        )
        var served: CustosServer.Served?
        try await CustosRuntime.run(configuration, options: runtimeOptions, services: { runtime in
            let services = CustosServices(runtime.verification(settings.verification, logger: logger), settings: settings, logger: logger)
            let prepared = try await CustosServer.prepare(services, endpoint: endpoint, metrics: metrics, logger: logger)
            served = prepared
            return prepared.members
        }) { _ in
            if let address = await served?.listening(), let addressFile {
                try? Data((address + "\n").utf8).write(to: URL(fileURLWithPath: addressFile), options: .atomic)
            }
        }
    }
}

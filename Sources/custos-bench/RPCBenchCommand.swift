import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import HSM
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Logging
import Metrics
import Prometheus
import RPC
import SecureMemory
import Storage
import Synchronization
import SwiftProtobuf
import TokenizationEvaluation
import Tokenization
import Verification

/// `custos-bench rpc`: requests per second and latency over real gRPC with mutual TLS, for
/// the empty RPC (Ping: the ceiling of the stack), API-key verification (WhoAmI with a
/// bearer key), and features in → token → answer (Enrol and Verify, a fresh consented session
/// per call), all measured in one run so each can be read as a ratio to Ping.
struct RPCBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract: "gRPC load over mutual TLS: Ping, WhoAmI, Enrol, Verify (server in-process, or --server).",
        discussion: """
        Without --server, starts the service in this process on 127.0.0.1 (any free port) with \
        the configuration's server certificate and CA, and stops it before exiting. Prepares a \
        tenant, an API key and consented sessions through the Admin (officer certificate) and \
        Verification RPCs, then loads the server from front-end-certificate clients.
        """
    )

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Load a running server (host:port) instead of one started in this process.") var server: String?
    @Option(help: "Client connections (HTTP/2).") var connections = 4
    @Option(help: "Concurrent callers, spread over the connections.") var callers = 32
    @Option(help: "Seconds per measured method.") var seconds: Double = 5
    @Option(help: "Seconds of unmeasured Ping and WhoAmI load before measuring.") var warmup: Double = 1
    @Option(help: "Subjects enrolled for Verify (Verify sessions name them round robin).") var subjects = 128
    @Option(help: "Most sessions prepared per session-consuming method.") var maxSessions = 100_000
    @Option(help: "Tokenizations per minute allowed to the bench tenant (SetTenantPolicy; the server allows at most 1,000,000).")
    var budget: UInt32 = 1_000_000
    @Option(help: "Front-end certificate of the load clients (default: frontend-demo.pem beside the CA).") var clientCertificate: String?
    @Option(help: "Its private key (default: frontend-demo.key beside the CA).") var clientKey: String?
    @Option(help: "Pairs of phases (key-use recording on, then off) for WhoAmI and Verify; in-process server only; 0 skips them.")
    var recordingRounds = 2
    @Option(help: "With --server: the server's /metrics (host:port), read for its PostgreSQL commits per call (default: the server's host and the configured metricsPort).")
    var metrics: String?
    @Flag(help: "Skip the last phase: Verify during a biometric rotation's overlap (it rotates the bench tenant's biometric keys).")
    var skipOverlap = false
    @Option(help: "Officer certificate for Admin calls (default: the configuration's rpc client certificate).") var officerCertificate: String?
    @Option(help: "Its private key (default: the configuration's rpc client key).") var officerKey: String?

    typealias Latency = BenchmarkLoop.Latency

    struct Report: Encodable {
        struct Method: Encodable {
            let method: String
            /// Calls answered OK, and how long the phase took.
            let requests: Int
            let seconds: Double
            let requests_per_s: Double
            let latency_ms: Latency
            /// Failed calls by gRPC code; empty in a clean run.
            let errors: [String: Int]
            /// requests/s ÷ Ping's requests/s in the same run.
            let ratio_to_ping: Double
            /// The prepared sessions ran out before the time was up (the rate is still over
            /// the phase's real duration).
            let ran_out_of_sessions: Bool
            /// The service's own PostgreSQL commits during the phase ÷ calls answered OK
            /// (`custos_db_commits_total`); nil for the bare service.
            let commits_per_call: Double?
            /// The service's HSM calls that hopped to a worker thread and back during the phase ÷
            /// calls answered OK (``ServerMetrics/hsmHops``; --server only).
            let hsm_hops_per_call: Double?
            /// CPU per call answered, by process (--server only; nil in-process, where the
            /// service and the load generator are one process).
            let cpu_us_per_call: CPUPerCall?
        }

        /// Microseconds of CPU per call answered: the server (the service, or the bare server in
        /// the bare phase), this load generator, PostgreSQL (nil when its cluster is not on this
        /// machine), their total; and how many cores the three kept busy on average.
        struct CPUPerCall: Encodable {
            let server: Double
            let load_generator: Double
            let postgres: Double?
            let total: Double
            let cores_busy: Double
        }

        let methods: [Method]
        /// Ping's rate ÷ the bare grpc-swift service's (same transport and TLS, no interceptors).
        let ping_to_bare: Double
        /// The bare service's rate in its two halves, right before and right after Ping's phase
        /// (`Bare.Ping` is both together): how much the order moved it in this run.
        let bare_before_after_ping_per_s: [Double]
        /// Whole verification sessions (CreateSession, OpenGateway, RecordConsent, Verify) per
        /// second, and that rate ÷ Ping's.
        let sessions_per_s: Double
        let sessions_to_ping: Double
        let verify_decisions: [String: Int]
        let server: String
        let tls: String
        let connections: Int
        let callers: Int
        let seconds_per_method: Double
        let verify_subjects: Int
        let sessions_prepared: Int
        let preparation_seconds: Double
        let hsm_workers: Int?
        let cores: Int
        /// WhoAmI and Verify with key-use recording on and off in alternating phases (in-process
        /// server only: the bench switches the server's counter).
        let recording: [RecordingComparison]
    }

    func validate() throws {
        guard connections >= 1, callers >= 1 else { throw ValidationError("--connections and --callers must be at least 1") }
        guard seconds > 0, warmup >= 0 else { throw ValidationError("--seconds must be positive and --warmup not negative") }
        guard subjects >= 1, maxSessions >= callers else { throw ValidationError("--subjects must be at least 1 and --max-sessions at least --callers") }
        guard budget > 0 else { throw ValidationError("--budget must be positive") }
        if let server, RPCLoadGenerator.Target(server) == nil { throw ValidationError("--server must be host:port") }
    }

    func run() async throws {
        let configuration = try options.loadConfiguration()
        guard let rpc = configuration.rpc else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "no rpc section: run scripts/setup")
        }
        guard let ca = rpc.caCertificate else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs caCertificate")
        }
        let pki = URL(fileURLWithPath: ca).deletingLastPathComponent()
        let frontend = RPCLoadGenerator.Identity(
            certificate: clientCertificate ?? pki.appendingPathComponent("frontend-demo.pem").path,
            key: clientKey ?? pki.appendingPathComponent("frontend-demo.key").path, ca: ca
        )
        guard let officerCertificate = officerCertificate ?? rpc.clientCertificate, let officerKey = officerKey ?? rpc.clientKey else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs clientCertificate and clientKey (an officer's), or --officer-certificate and --officer-key")
        }
        let officer = RPCLoadGenerator.Identity(certificate: officerCertificate, key: officerKey, ca: ca)

        let report: Report
        if let server, let target = RPCLoadGenerator.Target(server) {
            guard let metricsTarget = metrics.flatMap(RPCLoadGenerator.Target.init) ?? rpc.metricsPort.map({ RPCLoadGenerator.Target(host: target.host, port: $0) }) else {
                throw ValidationError("--server needs --metrics host:port (or metricsPort in the configuration) to count the server's commits")
            }
            // The bare service in a process of its own too, like the service.
            let bare = try BareServerProcess(configArguments: options.config.map { ["--config", $0] } ?? [])
            defer { bare.stop() }
            report = try await measure(
                target: target, bare: .init(host: "127.0.0.1", port: bare.port), barePID: bare.pid, postmaster: Self.postmaster(configuration),
                frontend: frontend, officer: officer, serverLabel: target.description, workers: nil,
                counters: { try await ServerMetrics.scrape(metricsTarget) }, setRecording: nil
            )
        } else {
            report = try await measureInProcess(configuration, rpc: rpc, frontend: frontend, officer: officer)
        }
        if json {
            print(try encodeJSON(report))
        } else {
            print(Self.table(report))
        }
    }

    /// Serves as `custos serve` does (same services, interceptors, transport, Prometheus
    /// metrics, listeners), on 127.0.0.1 and any free port, for the length of the measurement.
    private func measureInProcess(
        _ configuration: CustosConfiguration, rpc: CustosConfiguration.RPCSection,
        frontend: RPCLoadGenerator.Identity, officer: RPCLoadGenerator.Identity
    ) async throws -> Report {
        guard let certificate = rpc.serverCertificate, let key = rpc.serverKey, let ca = rpc.caCertificate else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs serverCertificate, serverKey and caCertificate")
        }
        ProcessHygiene.lockDown()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: PrometheusCollectorRegistry()))
        let logger = makeLogger()
        var settings = RPCSettings()
        if let notice = rpc.noticeVersion { settings.noticeVersion = notice }
        // Verify names its subjects round robin, far more often than the per-subject attempt
        // limit allows a real subject: the bench measures throughput, not that limit.
        settings.verificationAttempts = VerificationAttemptLimit(attempts: .max, window: .seconds(1))
        let endpoint = ServerEndpoint(host: "127.0.0.1", port: 0, tls: .init(certificateChain: certificate, privateKey: key, clientCA: ca))
        return try await CustosRuntime.run(configuration, options: .cli()) { context in
            let services = CustosServices(context.verification(settings.verification, logger: logger), settings: settings, logger: logger)
            let background = Task { await services.runBackground() }
            let outcome: Result<Report, any Error>
            do {
                let report = try await withGRPCServer(
                    transport: try CustosServer.transport(endpoint), services: services.services, interceptors: services.interceptors
                ) { server in
                    guard let port = try await server.listeningAddress?.ipv4?.port else {
                        throw LocalError.failed("the in-process server has no IPv4 address")
                    }
                    // API-key rows are cached only while the revocation listener runs (as in `serve`).
                    let deadline = ContinuousClock.now + .seconds(10)
                    while !context.apiKeys.isListening {
                        guard ContinuousClock.now < deadline else { throw LocalError.failed("the API-key revocation listener did not start") }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    let database = context.database
                    return try await BareRPCService.serve(try Self.loopbackEndpoint(configuration)) { barePort in
                        try await measure(
                            target: .init(host: "127.0.0.1", port: port), bare: .init(host: "127.0.0.1", port: barePort), barePID: nil, postmaster: nil,
                            frontend: frontend, officer: officer, serverLabel: "in-process", workers: context.pool.configuration.workers,
                            counters: { ServerMetrics(commits: database.commits.committed, cpuSeconds: nil) },
                            setRecording: { context.keyring.keyUses.isRecording = $0 }
                        )
                    }
                }
                outcome = .success(report)
            } catch {
                outcome = .failure(error)
            }
            // The server has stopped (withGRPCServer waits for it); now the listeners.
            background.cancel()
            await background.value
            return try outcome.get()
        }
    }

    /// The service's endpoint files on 127.0.0.1, any free port (the in-process and bare servers).
    static func loopbackEndpoint(_ configuration: CustosConfiguration) throws -> ServerEndpoint {
        guard let rpc = configuration.rpc, let certificate = rpc.serverCertificate, let key = rpc.serverKey, let ca = rpc.caCertificate else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs serverCertificate, serverKey and caCertificate")
        }
        return ServerEndpoint(host: "127.0.0.1", port: 0, tls: .init(certificateChain: certificate, privateKey: key, clientCA: ca))
    }

    /// The cluster's postmaster when the configuration's PostgreSQL runs on this machine.
    static func postmaster(_ configuration: CustosConfiguration) -> Int32? {
        configuration.postgres.flatMap { ProcessTreeCPU.postmaster(socketDirectory: $0.socketDirectory, port: $0.port) }
    }

    private func measure(
        target: RPCLoadGenerator.Target, bare: RPCLoadGenerator.Target, barePID: Int32?, postmaster: Int32?,
        frontend: RPCLoadGenerator.Identity, officer: RPCLoadGenerator.Identity, serverLabel: String, workers: Int?,
        counters: @escaping @Sendable () async throws -> ServerMetrics, setRecording: (@Sendable (Bool) -> Void)?
    ) async throws -> Report {
        // A tenant of its own, the largest tokenization budget the server allows (1,000,000/min,
        // far above this load), an API key.
        let run = String(UInt32.random(in: 0 ... .max), radix: 36)
        let (tenant, apiKey) = try await RPCLoadGenerator.withClients(count: 1, target: target, identity: officer) { clients in
            let admin = Custos_V1_Admin.Client(wrapping: clients[0])
            func step<R>(_ name: String, _ body: () async throws -> R) async throws -> R {
                do { return try await body() } catch { throw LocalError.failed("preparing the tenant: Admin.\(name): \(error)") }
            }
            let tenant = try await step("CreateTenant") { try await admin.createTenant(.with { $0.label = "bench-rpc-\(run)" }).tenant }
            // Only the budget (update mask): the thresholds stay those of the tenant's token format.
            _ = try await step("SetTenantPolicy") {
                try await admin.setTenantPolicy(.with {
                    $0.tenantID = tenant.tenantID
                    $0.policy.tokenizationBudgetPerMinute = budget
                    $0.updateMask = .with { $0.paths = ["tokenization_budget_per_minute"] }
                })
            }
            let issued = try await step("IssueAPIKey") {
                try await admin.issueAPIKey(.with {
                    $0.tenantID = tenant.tenantID
                    $0.scopes = ["verification", "webhooks", "keys"]
                    $0.label = "bench rpc \(run)"
                })
            }
            return (tenant.tenantID, issued.apiKey)
        }

        return try await RPCLoadGenerator.withClients(count: connections, target: target, identity: frontend) { clients in
            let load = RPCLoadGenerator(clients: clients, callers: callers, tenant: tenant)
            let options = load.options
            let tenantMetadata = load.tenantMetadata
            var bearerMetadata = Metadata()
            bearerMetadata.addString("Bearer \(apiKey)", forKey: "authorization")
            let bearer = bearerMetadata
            let ping: @Sendable (Int) async throws -> Bool = { caller in
                _ = try await load.verification(caller).ping(Custos_V1_PingRequest(), metadata: tenantMetadata, options: options)
                return true
            }
            let whoAmI: @Sendable (Int) async throws -> Bool = { caller in
                _ = try await Custos_V1_APIKeys.Client(wrapping: load.client(caller)).whoAmI(Custos_V1_WhoAmIRequest(), metadata: bearer, options: options)
                return true
            }
            // Connections up, handshakes done, caches warm.
            for call in [ping, whoAmI] {
                let warm = await load.measure(seconds: warmup, call)
                guard warm.errors.isEmpty else { throw LocalError.failed("warm-up failed: \(warm.errors)") }
            }

            // Features: one synthetic identity per Verify subject, two samples each: the first
            // enrolled, the second the probe. Enrol in the measured phase reuses the first samples
            // for fresh subjects (Enrol does not compare with other subjects).
            let embeddings = SyntheticEmbeddings(configuration: .init(identities: subjects, samplesPerIdentity: 2, dimension: 512, seed: 11)).embeddings
            let enrolFeatures = (0..<subjects).map { Array(embeddings.values(at: 2 * $0)) }
            let probeFeatures = (0..<subjects).map { Array(embeddings.values(at: 2 * $0 + 1)) }
            let subjectCount = subjects

            func enrol(_ queue: WorkQueue<(session: String, index: Int)>) -> @Sendable (Int) async throws -> Bool {
                { caller in
                    guard let next = queue.take() else { return false }
                    _ = try await load.verification(caller).enrol(
                        .with { $0.sessionID = next.session; $0.features = enrolFeatures[next.index % subjectCount] },
                        metadata: tenantMetadata, options: options
                    )
                    return true
                }
            }
            let decisions = Tally()
            func verify(_ queue: WorkQueue<(session: String, index: Int)>, tally: Tally?) -> @Sendable (Int) async throws -> Bool {
                { caller in
                    guard let next = queue.take() else { return false }
                    let answer = try await load.verification(caller).verify(
                        .with { $0.sessionID = next.session; $0.features = probeFeatures[next.index % subjectCount] },
                        metadata: tenantMetadata, options: options
                    )
                    tally?.add("\(answer.decision.color)")
                    return true
                }
            }
            func queue(_ sessions: [String]) -> WorkQueue<(session: String, index: Int)> {
                WorkQueue(items: sessions.enumerated().map { (session: $0.element, index: $0.offset) })
            }

            // Enrol the Verify subjects, then verify each once: both unmeasured, and their rates
            // size the session pools of the measured phases (twice what they suggest).
            let preparationStart = ContinuousClock.now
            let verifySubject: @Sendable (Int) -> String = { "bench-\(run)-v\($0 % subjectCount)" }
            let enrolled = await load.measure(seconds: 3600, enrol(queue(try await load.prepareSessions(count: subjects, subject: verifySubject))))
            guard enrolled.errors.isEmpty, enrolled.requests == subjects else {
                throw LocalError.failed("enrolling the \(subjects) Verify subjects failed: \(enrolled.errors)")
            }
            let checked = await load.measure(seconds: 3600, verify(queue(try await load.prepareSessions(count: subjects, subject: verifySubject)), tally: nil))
            guard checked.errors.isEmpty else { throw LocalError.failed("verifying the Verify subjects failed: \(checked.errors)") }
            func poolSize(_ phase: RPCLoadGenerator.Phase) -> Int {
                min(maxSessions, Int(phase.rate * seconds * 2) + 2 * callers)
            }
            let enrolSessions = try await load.prepareSessions(count: poolSize(enrolled)) { "bench-\(run)-e\($0)" }
            let verifySessions = try await load.prepareSessions(count: poolSize(checked), subject: verifySubject)
            let preparation = BenchmarkLoop.microseconds(ContinuousClock.now - preparationStart) / 1e6

            // The measured phases, back to back, in this order; each with the server's commits and
            // the CPU its processes spent.
            var phases = [MeasuredPhase]()
            func measured(_ name: String, _ call: @escaping @Sendable (Int) async throws -> Bool) async throws {
                let before = try await counters()
                let cpuBefore = PhaseCPU.now(server: before.cpuSeconds, postmaster: postmaster)
                PhaseMarks.mark("start", name)
                let phase = await load.measure(seconds: seconds, call)
                PhaseMarks.mark("end", name)
                let after = try await counters()
                let cpu = PhaseCPU.now(server: after.cpuSeconds, postmaster: postmaster).flatMap { end in cpuBefore.map { end.since($0) } }
                func perCall(_ before: Int?, _ after: Int?) -> Double? {
                    guard phase.requests > 0, let after else { return nil }
                    return Double(after - (before ?? 0)) / Double(phase.requests)
                }
                phases.append(MeasuredPhase(
                    name: name, phase: phase, commitsPerCall: perCall(before.commits, after.commits), hopsPerCall: perCall(before.hsmHops, after.hsmHops), cpu: cpu
                ))
            }
            // The bare server's CPU: from /proc, as it is a child of this process.
            func bareCPU() -> PhaseCPU? { PhaseCPU.now(server: barePID.flatMap(ProcessTreeCPU.seconds), postmaster: postmaster) }
            // The bare service's time in two halves around Ping's phase (A B A), on connections
            // of its own warmed as Ping's were: whatever drifts across the phases (the
            // preparation's after-effects in the server and PostgreSQL, other work on the
            // machine) weighs on both sides alike, instead of on whichever runs first.
            let bareHalves = try await RPCLoadGenerator.withClients(count: connections, target: bare, identity: frontend) { bareClients in
                let bareLoad = RPCLoadGenerator(clients: bareClients, callers: callers, tenant: tenant)
                let bareCall: @Sendable (Int) async throws -> Bool = { caller in
                    try await BareRPCService.call(bareLoad.client(caller), options: options)
                    return true
                }
                _ = await bareLoad.measure(seconds: warmup, bareCall)
                func half(_ name: String) async -> (RPCLoadGenerator.Phase, PhaseCPU?) {
                    let cpuBefore = bareCPU()
                    PhaseMarks.mark("start", name)
                    let phase = await bareLoad.measure(seconds: seconds / 2, bareCall)
                    PhaseMarks.mark("end", name)
                    return (phase, bareCPU().flatMap { end in cpuBefore.map { end.since($0) } })
                }
                let before = await half("Bare.Ping before")
                try await measured("Verification.Ping", ping)
                let after = await half("Bare.Ping after")
                return (before, after)
            }
            var barePhase = bareHalves.0.0
            barePhase.merge(bareHalves.1.0)
            barePhase.seconds = bareHalves.0.0.seconds + bareHalves.1.0.seconds
            let bareSpent = bareHalves.0.1.flatMap { first in bareHalves.1.1.map { first + $0 } }
            phases.insert(MeasuredPhase(name: "Bare.Ping (grpc-swift, no interceptors)", phase: barePhase, commitsPerCall: nil, hopsPerCall: nil, cpu: bareSpent), at: 0)
            try await measured("APIKeys.WhoAmI", whoAmI)
            try await measured("Verification.Enrol", enrol(queue(enrolSessions)))
            try await measured("Verification.Verify", verify(queue(verifySessions), tally: decisions))
            // A verification front-end's whole session per person: four RPCs, one subject each.
            let flowSubjects = WorkQueue(items: Array(0..<maxSessions))
            try await measured(Self.sessionFlowMethod) { caller in
                guard let index = flowSubjects.take() else { return false }
                let service = load.verification(caller)
                let created = try await service.createSession(.with { $0.subjectExternalID = verifySubject(index) }, metadata: tenantMetadata, options: options)
                let opened = try await service.openGateway(.with { $0.gatewayLink = created.gatewayLink }, metadata: tenantMetadata, options: options)
                _ = try await service.recordConsent(
                    .with { $0.sessionID = opened.sessionID; $0.noticeVersion = opened.noticeVersion }, metadata: tenantMetadata, options: options
                )
                _ = try await service.verify(
                    .with { $0.sessionID = opened.sessionID; $0.features = probeFeatures[index % subjectCount] }, metadata: tenantMetadata, options: options
                )
                return true
            }
            let ceiling = phases[1].phase.rate

            var recording = [RecordingComparison]()
            if let setRecording, recordingRounds > 0 {
                recording.append(try await RecordingComparison.measure(
                    "APIKeys.WhoAmI", rounds: recordingRounds, secondsPerPhase: seconds, setRecording: setRecording
                ) { await load.measure(seconds: seconds, whoAmI).rate })
                // Sessions for every Verify phase of the comparison: poolSize covers two phases at
                // the preparation's rate, and the measured phases ran faster than that (a run with
                // one pool per pair ran out in its last phase), so twice as many.
                let sessions = queue(try await load.prepareSessions(count: min(maxSessions, 2 * poolSize(checked) * recordingRounds), subject: verifySubject))
                recording.append(try await RecordingComparison.measure(
                    "Verification.Verify", rounds: recordingRounds, secondsPerPhase: seconds, setRecording: setRecording
                ) { await load.measure(seconds: seconds, verify(sessions, tally: nil)).rate })
            }
            var overlapSessions = 0
            if !skipOverlap {
                // Verify during a biometric rotation's overlap: subjects enrolled under v1, then
                // the keys rotated; each Verify tokenizes twice (v2, then v1 for the comparison)
                // and a GREEN one moves the subject to v2 in the same transaction. Each subject is
                // verified once here (its first Verify after the rotation: the overlap's cost).
                let count = poolSize(checked)
                let overlapSubject: @Sendable (Int) -> String = { "bench-\(run)-o\($0)" }
                let enrolledBefore = await load.measure(seconds: 3600, enrol(queue(try await load.prepareSessions(count: count, subject: overlapSubject))))
                guard enrolledBefore.errors.isEmpty else { throw LocalError.failed("enrolling the overlap subjects failed: \(enrolledBefore.errors)") }
                let sessions = try await load.prepareSessions(count: count, subject: overlapSubject)
                overlapSessions = 2 * count
                try await RPCLoadGenerator.withClients(count: 1, target: target, identity: officer) { clients in
                    do {
                        _ = try await Custos_V1_Admin.Client(wrapping: clients[0]).rotateKey(.with { $0.tenantID = tenant; $0.purpose = .bioPrf })
                    } catch {
                        throw LocalError.failed("rotating the bench tenant's biometric keys: Admin.RotateKey: \(error)")
                    }
                }
                // The server's key-state listener drops its cached versions on the rotation's NOTIFY.
                try await Task.sleep(for: .seconds(1))
                try await measured(Self.overlapVerifyMethod, verify(WorkQueue(items: sessions.enumerated().map { (session: $0.element, index: $0.offset) }), tally: nil))
            }
            let bareRate = phases[0].phase.rate
            let flowRate = phases.first { $0.name == Self.sessionFlowMethod }?.phase.rate ?? 0
            return Report(
                methods: phases.map { measured in
                    let phase = measured.phase
                    let latency = BenchmarkLoop.percentiles(phase.latencies)
                    return Report.Method(
                        method: measured.name, requests: phase.requests, seconds: Self.rounded(phase.seconds, 3),
                        requests_per_s: Self.rounded(phase.rate, 1),
                        latency_ms: Latency(p50: Self.rounded(latency.p50 / 1000, 3), p99: Self.rounded(latency.p99 / 1000, 3)),
                        errors: phase.errors, ratio_to_ping: ceiling > 0 ? Self.rounded(phase.rate / ceiling, 4) : 0,
                        ran_out_of_sessions: phase.exhausted, commits_per_call: measured.commitsPerCall.map { Self.rounded($0, 3) },
                        hsm_hops_per_call: measured.hopsPerCall.map { Self.rounded($0, 3) },
                        cpu_us_per_call: measured.cpu?.perCall(calls: phase.requests, seconds: phase.seconds)
                    )
                },
                ping_to_bare: bareRate > 0 ? Self.rounded(ceiling / bareRate, 4) : 0,
                bare_before_after_ping_per_s: [Self.rounded(bareHalves.0.0.rate, 1), Self.rounded(bareHalves.1.0.rate, 1)],
                sessions_per_s: Self.rounded(flowRate, 1), sessions_to_ping: ceiling > 0 ? Self.rounded(flowRate / ceiling, 4) : 0,
                verify_decisions: decisions.snapshot, server: serverLabel, tls: "mutual", connections: connections, callers: callers,
                seconds_per_method: seconds, verify_subjects: subjects,
                sessions_prepared: 2 * subjects + enrolSessions.count + verifySessions.count + overlapSessions,
                preparation_seconds: Self.rounded(preparation, 1), hsm_workers: workers,
                cores: ProcessInfo.processInfo.activeProcessorCount, recording: recording
            )
        }
    }

    /// One measured phase and what the server spent on it.
    struct MeasuredPhase {
        let name: String
        let phase: RPCLoadGenerator.Phase
        let commitsPerCall: Double?
        let hopsPerCall: Double?
        let cpu: PhaseCPU?
    }

    static let sessionFlowMethod = "Session: Create+Open+Consent+Verify"
    static let overlapVerifyMethod = "Verification.Verify (bio overlap)"

    static func rounded(_ value: Double, _ places: Int) -> Double {
        let scale = pow(10, Double(places))
        return (value * scale).rounded() / scale
    }

    static func table(_ report: Report) -> String {
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let space = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + space : space + text
        }
        var lines = [
            "server \(report.server), mutual TLS, \(report.connections) connections, \(report.callers) callers, \(report.seconds_per_method) s per method, \(report.cores) cores"
                + (report.hsm_workers.map { ", \($0) HSM workers" } ?? ""),
            pad("method", 40, left: true) + pad("req/s", 10) + pad("p50 ms", 9) + pad("p99 ms", 9) + pad("÷ Ping", 8) + pad("commits", 9) + pad("HSM hops", 9) + pad("CPU µs/call: server+generator+postgres", 40) + "  errors",
        ]
        for method in report.methods {
            let errors = method.errors.isEmpty ? "0" : method.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append(
                pad(method.method, 40, left: true) + pad(String(format: "%.0f", method.requests_per_s), 10)
                    + pad(String(format: "%.2f", method.latency_ms.p50), 9) + pad(String(format: "%.2f", method.latency_ms.p99), 9)
                    + pad(String(format: "%.3f", method.ratio_to_ping), 8)
                    + pad(method.commits_per_call.map { String(format: "%.3f", $0) } ?? "-", 9)
                    + pad(method.hsm_hops_per_call.map { String(format: "%.2f", $0) } ?? "-", 9)
                    + pad(method.cpu_us_per_call.map { cpu in
                        String(format: "%.0f+%.0f+%@ = %.0f", cpu.server, cpu.load_generator, cpu.postgres.map { String(format: "%.0f", $0) } ?? "?", cpu.total)
                    } ?? "-", 40) + "  " + errors
                    + (method.ran_out_of_sessions ? "  (ran out of sessions after \(method.seconds) s)" : "")
            )
        }
        let decisions = report.verify_decisions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        lines.append(String(
            format: "Ping ÷ bare %.3f (bare %.0f/s before Ping, %.0f/s after); whole sessions %.0f/s (÷ Ping %.3f)", report.ping_to_bare,
            report.bare_before_after_ping_per_s[0], report.bare_before_after_ping_per_s[1], report.sessions_per_s, report.sessions_to_ping
        ))
        lines.append("Verify decisions: \(decisions.isEmpty ? "none" : decisions); \(report.sessions_prepared) sessions prepared in \(report.preparation_seconds) s")
        lines += report.recording.map(\.line)
        return lines.joined(separator: "\n")
    }
}

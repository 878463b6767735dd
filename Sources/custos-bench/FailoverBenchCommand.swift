import ArgumentParser
import Composition
import CustosCommandLine
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import TokenizationEvaluation

/// `custos-bench failover`: two service instances on one configuration and database, load through
/// the health-checked round-robin client a front-end uses (``RoundRobinClient/healthChecked(_:security:timeout:methodConfigs:)``)
/// — WhoAmI, whole Verify sessions and whole Enrol sessions, each with a known right answer — and one fault midway
/// (``FailoverFault``: `instance-kill` is `kill -9` of one instance; `token-loss` removes one of
/// two tokens from in-process instances for a while). Reports what a caller
/// saw: calls, successes, failures by code, wrong answers, the longest time without a success,
/// when failures stopped, and whether any acknowledged Enrol is missing afterwards.
struct FailoverBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Two service instances under load through the health-checked round-robin client; one fault midway (an instance killed, or a token removed).",
        discussion: """
        Starts two instances on a copy of the configuration (any free ports; the per-subject \
        Verify limit raised, as the load verifies a few subjects many times), prepares a tenant, \
        an API key and enrolled subjects through the RPC, then loads both instances through \
        --connections health-checked round-robin clients (each watching both instances' \
        grpc.health.v1 status, as a front-end does) and injects \
        --fault at --fault-at seconds. A call is one WhoAmI or one whole session (CreateSession, \
        OpenGateway, RecordConsent, then Verify or Enrol). instance-kill: two `custos serve` \
        processes (the binary beside this one), the first killed with SIGKILL. token-loss: two \
        instances in this process, each over two tokens (the configured token and a replica \
        restored from the setup's ceremony shares, in a private copy of the SoftHSM token \
        directory, each token through its own copy of the module); every PKCS#11 function of the \
        first token answers CKR_DEVICE_REMOVED for --outage seconds.
        """
    )

    @OptionGroup var options: LocalOptions
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Seconds of load.") var seconds: Double = 20
    @Option(help: "Seconds into the load at which the fault is injected.") var faultAt: Double = 8
    @Option(help: "The fault: \(FailoverFaults.names.joined(separator: ", ")).") var fault = "instance-kill"
    @Option(help: "Seconds a lasting fault lasts (token-loss: the token stays removed).") var outage: Double = 4
    @Option(help: "Concurrent callers.") var callers = 8
    @Option(help: "Client channels (each round robin over both instances).") var connections = 2
    @Option(help: "Subjects enrolled before the load, verified round robin during it.") var subjects = 32

    struct Report: Encodable {
        let fault: String
        /// The client the load goes through.
        let client: String
        let instances: Int
        let seconds: Double
        let fault_at_s: Double
        /// Calls started (a call: one WhoAmI, or one whole Verify or Enrol session).
        let calls: Int
        let succeeded: Int
        /// Failed calls by the gRPC code of the RPC that failed.
        let failed: [String: Int]
        /// Failed calls by kind and code ("Enrol unavailable": a session whose write was in
        /// flight on the killed instance; a WhoAmI, a read, is retried and should never fail).
        let failed_by_kind: [String: Int]
        /// Answers that differ from the known right one (another tenant, another decision): must be 0.
        let wrong_results: Int
        let calls_by_kind: [String: Int]
        /// succeeded ÷ calls.
        let success_ratio: Double
        /// The longest time between two successes anywhere in the load.
        let longest_gap_without_success_ms: Double
        /// Where that gap began, in seconds from the load's start (the fault is at `fault_at_s`).
        let longest_gap_from_s: Double
        /// From the fault until the end of the last failed call (0: nothing failed after it).
        let recovered_after_ms: Double
        /// Enrols answered OK, and how many of those subjects Verify then finds not enrolled.
        let enrols_acknowledged: Int
        let acknowledged_writes_lost: Int
        /// Acknowledged subjects whose check itself failed three times (neither found nor missing).
        let acknowledged_writes_unchecked: Int
        let callers: Int
        let connections: Int
        let cores: Int
        /// What the fault measured itself (token-loss: `token_taken_out_after_ms`, from the
        /// removal to the token out of service on every instance; `token_back_in_service_after_ms`,
        /// from the token's return to it serving again on every instance; `token_removed_for_ms`).
        let fault_measurements: [String: Double]
    }

    func validate() throws {
        guard FailoverFaults.named(fault) != nil else { throw ValidationError("--fault must be one of \(FailoverFaults.names)") }
        guard seconds > 0, faultAt >= 0, faultAt < seconds else { throw ValidationError("--fault-at must lie within --seconds") }
        guard outage > 0, faultAt + outage < seconds else { throw ValidationError("--outage must be positive and end within --seconds") }
        guard callers >= 1, connections >= 1, subjects >= 1 else { throw ValidationError("--callers, --connections and --subjects must be at least 1") }
    }

    func run() async throws {
        let configuration = try options.loadConfiguration()
        guard let rpc = configuration.rpc, let ca = rpc.caCertificate, let officerCertificate = rpc.clientCertificate, let officerKey = rpc.clientKey else {
            throw ConfigurationError.invalid(path: configuration.source, reason: "rpc needs caCertificate, clientCertificate and clientKey: run scripts/setup")
        }
        let pki = URL(fileURLWithPath: ca).deletingLastPathComponent()
        let frontend = RPCClientTLS(
            certificateChain: pki.appendingPathComponent("frontend-demo.pem").path, privateKey: pki.appendingPathComponent("frontend-demo.key").path, serverCA: ca
        ).transportSecurity
        let officer = RPCClientTLS(certificateChain: officerCertificate, privateKey: officerKey, serverCA: ca).transportSecurity

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("custos-failover-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = try Self.writeConfiguration(from: configuration.source, into: directory)
        let instances = try await FailoverFaults.named(fault)!.start(
            FailoverSetting(configuration: configuration, configurationPath: config, directory: directory, outageSeconds: outage)
        )
        let report: Report
        do {
            let addresses = try ServiceAddresses(parsing: instances.addresses.joined(separator: ","))
            report = try await measure(addresses: addresses, frontend: frontend, officer: officer, instances: instances)
        } catch {
            await instances.stop()
            throw error
        }
        await instances.stop()
        if json {
            print(try encodeJSON(report))
        } else {
            print(Self.table(report))
        }
    }

    /// The configuration as given, with a per-subject Verify limit the load cannot reach.
    static func writeConfiguration(from source: String, into directory: URL) throws -> String {
        guard let data = FileManager.default.contents(atPath: source), var json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LocalError.failed("cannot read \(source) as JSON")
        }
        var rpc = json["rpc"] as? [String: Any] ?? [:]
        rpc["verificationAttemptsPerSubject"] = 1_000_000_000
        json["rpc"] = rpc
        let path = directory.appendingPathComponent("config.json").path
        guard FileManager.default.createFile(
            atPath: path, contents: try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted]), attributes: [.posixPermissions: 0o600]
        ) else { throw LocalError.failed("cannot write \(path)") }
        return path
    }

    /// `custos` beside this executable (scripts/bench builds both).
    static func custosBinary() -> URL {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        let folder = FileManager.default.isExecutableFile(atPath: me.path) ? me.deletingLastPathComponent()
            : URL(fileURLWithPath: Bundle.main.executablePath ?? me.path).deletingLastPathComponent()
        return folder.appendingPathComponent("custos")
    }

    private func measure(
        addresses: ServiceAddresses, frontend: HTTP2ClientTransport.Posix.TransportSecurity,
        officer: HTTP2ClientTransport.Posix.TransportSecurity, instances: any FailoverFault
    ) async throws -> Report {
        let run = String(UInt32.random(in: 0 ... .max), radix: 36)
        let options = CallOptions.defaults.with { $0.timeout = .seconds(30) }
        let (tenant, apiKey) = try await withGRPCClient(transport: try RoundRobinClient.transport(addresses, security: officer)) { client in
            let admin = Custos_V1_Admin.Client(wrapping: client)
            let tenant = try await admin.createTenant(.with { $0.label = "bench-failover-\(run)" }, options: options).tenant
            // Only the budget (update mask): a new tenant's policy sent back whole is refused
            // (INVALID_ARGUMENT: its AMBER is below the unrelated-face score of its quaternary tokens).
            _ = try await admin.setTenantPolicy(.with {
                $0.tenantID = tenant.tenantID
                $0.policy.tokenizationBudgetPerMinute = 1_000_000
                $0.updateMask = .with { $0.paths = ["tokenization_budget_per_minute"] }
            }, options: options)
            let issued = try await admin.issueAPIKey(.with {
                $0.tenantID = tenant.tenantID
                $0.scopes = ["keys"]
                $0.label = "bench failover \(run)"
            }, options: options)
            return (tenant.tenantID, issued.apiKey)
        }
        // The client a front-end uses: round robin over the instances whose health watch says
        // SERVING, idempotent calls retried on UNAVAILABLE.
        let transports = try (0..<connections).map { _ in try RoundRobinClient.healthChecked(addresses, security: frontend) }
        let clients = transports.map { GRPCClient(transport: $0) }
        return try await withThrowingDiscardingTaskGroup { group in
            for client in clients { group.addTask { try await client.runConnections() } }
            defer { for client in clients { client.beginGracefulShutdown() } }
            let calls = FailoverCalls(clients: clients, tenant: tenant, apiKey: apiKey, options: options)

            // Subjects enrolled and verified once before the load: each one's decision is the
            // right answer for its Verify calls during it (tokenization is deterministic).
            let embeddings = SyntheticEmbeddings(configuration: .init(identities: subjects, samplesPerIdentity: 2, dimension: 512, seed: 13)).embeddings
            let enrolFeatures = (0..<subjects).map { Array(embeddings.values(at: 2 * $0)) }
            let probeFeatures = (0..<subjects).map { Array(embeddings.values(at: 2 * $0 + 1)) }
            var expected = [Custos_V1_DecisionColor]()
            for index in 0..<subjects {
                _ = try await calls.enrol(caller: index, subject: "fo-\(run)-v\(index)", features: enrolFeatures[index])
                expected.append(try await calls.verify(caller: index, subject: "fo-\(run)-v\(index)", features: probeFeatures[index]))
            }
            let rightDecisions = expected

            let tally = FailoverTally()
            let start = ContinuousClock.now
            let deadline = start + .milliseconds(Int64(seconds * 1000))
            let faultSeconds = faultAt
            try await withThrowingDiscardingTaskGroup { load in
                load.addTask {
                    try await Task.sleep(until: start + .milliseconds(Int64(faultSeconds * 1000)), clock: .continuous)
                    tally.markFault()
                    try await instances.inject()
                }
                for caller in 0..<callers {
                    load.addTask {
                        var iteration = 0
                        while ContinuousClock.now < deadline {
                            iteration += 1
                            let kind = (caller + iteration) % 3
                            let subject = (caller * 7919 + iteration) % rightDecisions.count
                            do {
                                switch kind {
                                case 0:
                                    let who = try await calls.whoAmI(caller: caller)
                                    tally.record("WhoAmI", wrong: who != tenant)
                                case 1:
                                    let decision = try await calls.verify(caller: caller, subject: "fo-\(run)-v\(subject)", features: probeFeatures[subject])
                                    tally.record("Verify", wrong: decision != rightDecisions[subject])
                                default:
                                    let name = "fo-\(run)-e\(caller)-\(iteration)"
                                    let reference = try await calls.enrol(caller: caller, subject: name, features: enrolFeatures[subject])
                                    tally.record("Enrol", wrong: reference.isEmpty, acknowledged: (name, subject))
                                }
                            } catch {
                                tally.fail(["WhoAmI", "Verify", "Enrol"][kind], code: (error as? RPCError).map { "\($0.code)" } ?? "\(type(of: error))")
                            }
                        }
                    }
                }
            }
            let end = ContinuousClock.now

            // Every acknowledged Enrol must still be there: Verify with the enrolled features.
            let acknowledged = tally.acknowledged
            let checked = Tally()
            let queue = WorkQueue(items: acknowledged)
            try await withThrowingDiscardingTaskGroup { checks in
                for caller in 0..<callers {
                    checks.addTask {
                        while let item = queue.take() {
                            let (name, subject) = item
                            var outcome: Bool?
                            for _ in 0..<3 where outcome == nil {
                                do {
                                    _ = try await calls.verify(caller: caller, subject: name, features: enrolFeatures[subject])
                                    outcome = true
                                } catch let error as RPCError where error.code == .failedPrecondition && error.message.contains("not enrolled") {
                                    outcome = false
                                } catch {}
                            }
                            if outcome == false { checked.add("lost") }
                            if outcome == nil { checked.add("unchecked") }
                        }
                    }
                }
            }

            let snapshot = tally.snapshot(start: start, end: end)
            return Report(
                fault: instances.name, client: "RoundRobinClient.healthChecked", instances: instances.addresses.count, seconds: seconds, fault_at_s: faultAt,
                calls: snapshot.calls, succeeded: snapshot.succeeded, failed: snapshot.failed, failed_by_kind: snapshot.failedByKind, wrong_results: snapshot.wrong,
                calls_by_kind: snapshot.byKind, success_ratio: snapshot.calls > 0 ? Double(snapshot.succeeded) / Double(snapshot.calls) : 0,
                longest_gap_without_success_ms: snapshot.longestGapMilliseconds, longest_gap_from_s: snapshot.longestGapStartSeconds,
                recovered_after_ms: snapshot.recoveredAfterMilliseconds,
                enrols_acknowledged: acknowledged.count, acknowledged_writes_lost: checked.snapshot["lost"] ?? 0,
                acknowledged_writes_unchecked: checked.snapshot["unchecked"] ?? 0,
                callers: callers, connections: connections, cores: ProcessInfo.processInfo.activeProcessorCount,
                fault_measurements: instances.measurements
            )
        }
    }

    static func table(_ report: Report) -> String {
        """
        failover: \(report.fault) at \(report.fault_at_s) s of \(report.seconds) s, \(report.instances) instances, \(report.callers) callers through \(report.client)
        calls \(report.calls), succeeded \(report.succeeded) (\(String(format: "%.4f", report.success_ratio))), failed \(report.failed_by_kind), wrong \(report.wrong_results)
        longest gap without a success \(String(format: "%.0f", report.longest_gap_without_success_ms)) ms (from \(String(format: "%.1f", report.longest_gap_from_s)) s), failures ended \(String(format: "%.0f", report.recovered_after_ms)) ms after the fault
        enrols acknowledged \(report.enrols_acknowledged), lost \(report.acknowledged_writes_lost), unchecked \(report.acknowledged_writes_unchecked)
        """ + report.fault_measurements.sorted { $0.key < $1.key }.map { "\n\($0.key) \(String(format: "%.0f", $0.value))" }.joined()
    }
}

extension CallOptions {
    fileprivate func with(_ change: (inout Self) -> Void) -> Self {
        var copy = self
        change(&copy)
        return copy
    }
}

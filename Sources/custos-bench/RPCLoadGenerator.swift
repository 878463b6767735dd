import CustosCommandLine
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import SwiftProtobuf
import Synchronization

/// The client side of `custos-bench rpc`: `clients` HTTP/2 connections (one `GRPCClient`
/// each), `callers` concurrent callers spread over them round robin, closed loop: each caller
/// sends its next request when the previous answer arrived.
struct RPCLoadGenerator: Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    /// Where the server listens.
    struct Target: Sendable, CustomStringConvertible {
        var host: String
        var port: Int

        /// `host:port` or `[v6]:port`.
        init?(_ text: String) {
            let host: Substring
            let port: Substring
            if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
                host = text[text.index(after: text.startIndex)..<close]
                port = text[close...].dropFirst(2)
                guard text[text.index(after: close)...].hasPrefix(":") else { return nil }
            } else {
                guard let colon = text.lastIndex(of: ":") else { return nil }
                host = text[..<colon]
                port = text[text.index(after: colon)...]
            }
            guard !host.isEmpty, let number = Int(port), (1...65_535).contains(number) else { return nil }
            self.init(host: String(host), port: number)
        }

        init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        func resolvable() -> any ResolvableTarget {
            if host.contains(":") { return ResolvableTargets.IPv6.ipv6(address: host, port: port) }
            if host.split(separator: ".").count == 4, host.allSatisfy({ $0.isNumber || $0 == "." }) {
                return ResolvableTargets.IPv4.ipv4(address: host, port: port)
            }
            return ResolvableTargets.DNS.dns(host: host, port: port)
        }
    }

    /// A client certificate and key, and the CA the server's certificate must chain to (PEM files).
    struct Identity: Sendable {
        var certificate: String
        var key: String
        var ca: String

        var security: HTTP2ClientTransport.Posix.TransportSecurity {
            RPCClientTLS(certificateChain: certificate, privateKey: key, serverCA: ca).transportSecurity
        }
    }

    /// What one measured phase saw.
    struct Phase: Sendable {
        /// Calls answered OK.
        var requests = 0
        /// From the first call to the last answer.
        var seconds = 0.0
        /// Per OK call, µs.
        var latencies = [Double]()
        /// Failed calls by gRPC status code.
        var errors = [String: Int]()
        /// A caller found no prepared session left before the time was up.
        var exhausted = false

        var rate: Double { seconds > 0 ? Double(requests) / seconds : 0 }

        mutating func merge(_ other: Phase) {
            requests += other.requests
            latencies += other.latencies
            errors.merge(other.errors, uniquingKeysWith: +)
            exhausted = exhausted || other.exhausted
        }
    }

    let clients: [Client]
    let callers: Int
    /// `custos-tenant`: the front-end certificate serves any tenant and names one per call.
    let tenantMetadata: Metadata
    let options: CallOptions

    init(clients: [Client], callers: Int, tenant: String) {
        self.clients = clients
        self.callers = callers
        var metadata = Metadata()
        metadata.addString(tenant, forKey: Authenticator.tenantMetadataKey)
        self.tenantMetadata = metadata
        var options = CallOptions.defaults
        options.timeout = .seconds(30)
        self.options = options
    }

    func client(_ caller: Int) -> Client { clients[caller % clients.count] }

    func verification(_ caller: Int) -> Custos_V1_Verification.Client<HTTP2ClientTransport.Posix> {
        Custos_V1_Verification.Client(wrapping: client(caller))
    }

    /// Runs `body` with `count` connected clients (each its own HTTP/2 connection), and closes
    /// them, gracefully, when it returns or throws.
    static func withClients<Result: Sendable>(
        count: Int, target: Target, identity: Identity, _ body: ([Client]) async throws -> Result
    ) async throws -> Result {
        try await withThrowingDiscardingTaskGroup { group in
            let clients = try (0..<count).map { _ in
                Client(transport: try HTTP2ClientTransport.Posix(target: target.resolvable(), transportSecurity: identity.security))
            }
            for client in clients { group.addTask { try await client.runConnections() } }
            defer { for client in clients { client.beginGracefulShutdown() } }
            return try await body(clients)
        }
    }

    /// `callers` tasks repeat `call` until `seconds` have passed, or until `call` returns false
    /// (no work left: not counted). Only OK calls are timed; failures are counted by code.
    func measure(seconds: Double, _ call: @escaping @Sendable (_ caller: Int) async throws -> Bool) async -> Phase {
        let start = ContinuousClock.now
        let deadline = start + .microseconds(Int64(seconds * 1e6))
        var phase = await withTaskGroup(of: Phase.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var mine = Phase()
                    mine.latencies.reserveCapacity(4096)
                    while ContinuousClock.now < deadline {
                        let before = ContinuousClock.now
                        do {
                            guard try await call(caller) else {
                                mine.exhausted = true
                                break
                            }
                            mine.latencies.append(BenchmarkLoop.microseconds(ContinuousClock.now - before))
                            mine.requests += 1
                        } catch let error as RPCError {
                            mine.errors["\(error.code)", default: 0] += 1
                        } catch {
                            mine.errors["\(type(of: error))", default: 0] += 1
                        }
                    }
                    return mine
                }
            }
            return await group.reduce(into: Phase()) { $0.merge($1) }
        }
        phase.seconds = BenchmarkLoop.microseconds(ContinuousClock.now - start) / 1e6
        return phase
    }

    /// Makes `count` sessions ready for features, `callers` at a time: CreateSession (for the
    /// subject `subject(index)` names) → OpenGateway → RecordConsent with the notice version
    /// OpenGateway returned.
    /// - Returns: the session ids, in index order.
    /// - Throws: the first failure, naming the step.
    func prepareSessions(count: Int, subject: @escaping @Sendable (Int) -> String) async throws -> [String] {
        let next = WorkQueue(items: Array(0..<count))
        return try await withThrowingTaskGroup(of: [(Int, String)].self) { group in
            for caller in 0..<callers {
                group.addTask {
                    let service = verification(caller)
                    var made = [(Int, String)]()
                    while let index = next.take() {
                        func step<R>(_ name: String, _ body: () async throws -> R) async throws -> R {
                            do { return try await body() } catch { throw LocalError.failed("preparing session \(index): \(name): \(error)") }
                        }
                        let created = try await step("CreateSession") {
                            try await service.createSession(.with { $0.subjectExternalID = subject(index) }, metadata: tenantMetadata, options: options)
                        }
                        let opened = try await step("OpenGateway") {
                            try await service.openGateway(.with { $0.gatewayLink = created.gatewayLink }, metadata: tenantMetadata, options: options)
                        }
                        _ = try await step("RecordConsent") {
                            try await service.recordConsent(
                                .with { $0.sessionID = opened.sessionID; $0.noticeVersion = opened.noticeVersion },
                                metadata: tenantMetadata, options: options
                            )
                        }
                        made.append((index, opened.sessionID))
                    }
                    return made
                }
            }
            var sessions = [String](repeating: "", count: count)
            for try await made in group {
                for (index, session) in made { sessions[index] = session }
            }
            return sessions
        }
    }
}

/// Items handed out once each, to any number of concurrent takers.
final class WorkQueue<Item: Sendable>: Sendable {
    let items: [Item]
    private let next = Atomic<Int>(0)

    init(items: [Item]) { self.items = items }

    /// The next item, or nil when all were taken.
    func take() -> Item? {
        let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
        return index < items.count ? items[index] : nil
    }
}

/// Counts by label from concurrent tasks.
final class Tally: Sendable {
    private let counts = Mutex([String: Int]())

    func add(_ label: String) { counts.withLock { $0[label, default: 0] += 1 } }

    var snapshot: [String: Int] { counts.withLock { $0 } }
}

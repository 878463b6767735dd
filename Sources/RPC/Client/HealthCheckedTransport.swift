public import GRPCCore
public import GRPCNIOTransportHTTP2Posix
import Synchronization

/// Round robin over several Custos instances that sends calls only to those whose standard
/// health service (`grpc.health.v1.Health/Watch`, ``HealthService``) says SERVING: an instance
/// that is shutting down (it reports NOT_SERVING before it stops accepting calls), killed (its
/// watch breaks with the connection) or marked not serving by its operator is skipped until its
/// watch reports SERVING again. grpc-swift 2's own `roundRobin` balancing has no health checks:
/// it skips only instances it cannot connect to, and sends calls to one that answers but is
/// going away.
///
/// Each address gets a connection of its own (a transport configured as
/// ``RoundRobinClient/transport(_:security:timeout:methodConfigs:)``'s) and a `Watch` on it that
/// is re-opened with backoff (``RoundRobinClient/reconnectBackoff``'s 100 ms to 2 s) whenever it
/// ends. Retries are the `GRPCClient`'s, with ``RoundRobinClient/serviceConfig(timeout:methodConfigs:)``:
/// only ``RoundRobinClient/idempotentMethods`` are sent again on UNAVAILABLE, and each attempt
/// takes the next serving instance, so a read that met a killed instance answers on another.
///
/// A health status lags the connection: a killed instance's connection is gone at once, but its
/// watch says so only once its task next runs (tens of milliseconds on a loaded machine), and an
/// instance without a health service is asked again only every 2 s. A call whose stream cannot
/// be opened on the instance chosen for it (its connection is down or reconnecting) therefore
/// goes to the next serving instance, as grpc-swift's own round robin moves it to another
/// subchannel: nothing of it left this client, so this holds for writes too. It must happen
/// here: grpc-swift's retry does not retry an error a transport throws before the stream exists,
/// so without it such a call failed UNAVAILABLE while another instance was serving (a read in
/// 100 in CI after a SIGKILL, issue 13).
///
/// An instance without a health service (UNIMPLEMENTED) counts as serving while it answers, as
/// gRPC's client-side health checking does. While no instance is serving, a call waits up to
/// ``servingWait`` for one, then fails with UNAVAILABLE.
///
/// Use it as any transport: `try await withGRPCClient(transport: try RoundRobinClient.healthChecked(…)) { … }`.
public final class HealthCheckedTransport: ClientTransport {
    public typealias Bytes = HTTP2ClientTransport.Posix.Bytes

    /// What an instance's health watch last said.
    public enum InstanceHealth: Sendable, Hashable {
        /// No answer yet (its first watch is under way).
        case unknown
        case serving
        /// NOT_SERVING, SERVICE_UNKNOWN, or its watch failed (connection lost, refused).
        case notServing
    }

    /// One instance: its own connection, and a client over it for the health watch.
    private struct Member: Sendable {
        let address: ServiceAddresses.Address
        let transport: HTTP2ClientTransport.Posix
        let client: GRPCClient<HTTP2ClientTransport.Posix>
    }

    private let members: [Member]
    private let health: Mutex<[InstanceHealth]>
    private let rotation = Atomic<Int>(0)
    private let moved = Atomic<Int>(0)
    /// The health service name each instance is asked about (`""`: the whole server).
    private let service: String
    /// Finished at graceful shutdown: ends the health watches, which would otherwise hold the
    /// connections open forever.
    private let shutdown: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)
    /// How long a call waits for an instance to report SERVING when none does.
    public let servingWait: Duration

    /// - Parameters:
    ///   - addresses: one instance per address (IP literals or one DNS name each).
    ///   - service: the health service name to watch (`""`, the whole server, by default).
    ///   - servingWait: how long a call waits while no instance is serving.
    /// - Throws: grpc-swift's error when no resolver takes an address.
    public init(
        _ addresses: ServiceAddresses, security: HTTP2ClientTransport.Posix.TransportSecurity, serviceConfig: ServiceConfig,
        service: String = "", servingWait: Duration = .seconds(2)
    ) throws {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.backoff = RoundRobinClient.reconnectBackoff
        members = try addresses.addresses.map { address in
            let transport = try HTTP2ClientTransport.Posix(
                target: Self.target(address), transportSecurity: security, config: config, serviceConfig: serviceConfig
            )
            return Member(address: address, transport: transport, client: GRPCClient(transport: transport))
        }
        health = Mutex(Array(repeating: .unknown, count: members.count))
        self.service = service
        self.servingWait = servingWait
        shutdown = AsyncStream.makeStream(of: Void.self)
    }

    private static func target(_ address: ServiceAddresses.Address) -> any ResolvableTarget {
        if ServiceAddresses.isIPv4(address.host) { return .ipv4(address: address.host, port: address.port) }
        if ServiceAddresses.isIPv6(address.host) { return .ipv6(address: address.host, port: address.port) }
        return .dns(host: address.host, port: address.port)
    }

    /// Each instance's address and what its health watch last said, in the order given.
    public var instances: [(address: ServiceAddresses.Address, health: InstanceHealth)] {
        let health = health.withLock { $0 }
        return zip(members.map(\.address), health).map { ($0, $1) }
    }

    /// How many calls so far could not open their stream on the instance chosen for them and
    /// were moved to another (each move counted once).
    public var callsMovedToAnotherInstance: Int { moved.load(ordering: .relaxed) }

    // MARK: ClientTransport

    public var retryThrottle: RetryThrottle? { members.first?.transport.retryThrottle }

    public func config(forMethod descriptor: MethodDescriptor) -> MethodConfig? {
        members.first?.transport.config(forMethod: descriptor)
    }

    /// Runs every instance's connection and health watch until shutdown.
    public func connect() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for member in members {
                group.addTask { try await member.client.runConnections() }
            }
            group.addTask {
                await withDiscardingTaskGroup { watches in
                    for index in self.members.indices {
                        watches.addTask { await self.watchHealth(of: index) }
                    }
                    for await _ in self.shutdown.stream {}
                    watches.cancelAll()
                }
            }
        }
    }

    public func beginGracefulShutdown() {
        shutdown.continuation.finish()
        for member in members { member.client.beginGracefulShutdown() }
    }

    public func withStream<T: Sendable>(
        descriptor: MethodDescriptor, options: CallOptions,
        _ closure: (_ stream: RPCStream<Inbound, Outbound>, _ context: ClientContext) async throws -> T
    ) async throws -> T {
        // Instances on which this call's stream could not be opened (see the type's comment).
        var unopened = Set<Int>()
        var lastError: (any Error)?
        let deadline = ContinuousClock.now + servingWait
        while true {
            let index = try await servingInstance(excluding: unopened, until: deadline, lastError: lastError)
            var opened = false
            do {
                return try await members[index].transport.withStream(descriptor: descriptor, options: options) { stream, context in
                    opened = true
                    return try await closure(stream, context)
                }
            } catch let error where !opened && !(error is CancellationError) && !Task.isCancelled {
                // Never opened there: nothing was sent, so the call may go elsewhere. Once opened,
                // an error is the call's own (the retry policy decides, by method).
                unopened.insert(index)
                lastError = error
                moved.add(1, ordering: .relaxed)
            }
        }
    }

    // MARK: Choosing

    /// The next serving instance in turn that is not in `unopened`; while none is, waits for one
    /// until `deadline` (``servingWait`` from the call's start).
    /// - Throws: UNAVAILABLE when none serves by then; `lastError` (why the last stream could not
    ///   be opened) at once when every instance has failed to open this call's stream, or at the
    ///   deadline when one has.
    private func servingInstance(excluding unopened: Set<Int>, until deadline: ContinuousClock.Instant, lastError: (any Error)?) async throws -> Int {
        while true {
            if let index = nextServing(excluding: unopened) { return index }
            if let lastError, unopened.count == members.count { throw lastError }
            guard ContinuousClock.now < deadline else {
                if let lastError { throw lastError }
                throw RPCError(code: .unavailable, message: "no Custos instance reports SERVING (\(members.map { "\($0.address.host):\($0.address.port)" }.joined(separator: ",")))")
            }
            // Polled: waiting for a status change is the rare path (every instance down or
            // starting), and a watch reports within milliseconds of connecting.
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    private func nextServing(excluding unopened: Set<Int>) -> Int? {
        let start = rotation.wrappingAdd(1, ordering: .relaxed).oldValue
        return health.withLock { health in
            let count = health.count
            return (0..<count).lazy.map { (Int(UInt(bitPattern: start) % UInt(count)) + $0) % count }
                .first { health[$0] == .serving && !unopened.contains($0) }
        }
    }

    // MARK: Watching

    /// Watches one instance's health until cancelled: re-opens the watch with backoff whenever
    /// it ends or fails, and counts the instance not serving meanwhile.
    private func watchHealth(of index: Int) async {
        let client = Grpc_Health_V1_Health.Client(wrapping: members[index].client)
        let backoff = RoundRobinClient.reconnectBackoff
        var delay = backoff.initial
        while !Task.isCancelled {
            let answered: Bool
            do {
                answered = try await client.watch(.with { $0.service = service }) { response in
                    var answered = false
                    for try await message in response.messages {
                        self.set(index, message.status == .serving ? .serving : .notServing)
                        answered = true
                    }
                    return answered
                }
            } catch let error as RPCError where error.code == .unimplemented {
                // No health service there: it serves as long as it answers (gRPC's rule). Ask
                // again later, which also notices the instance going away.
                set(index, .serving)
                try? await Task.sleep(for: backoff.max)
                continue
            } catch {
                answered = false
            }
            // The watch ended (the server is shutting down) or failed (connection lost).
            set(index, .notServing)
            delay = answered ? backoff.initial : Swift.min(delay * backoff.multiplier, backoff.max)
            try? await Task.sleep(for: delay)
        }
    }

    /// Internal, not private: tests set an instance SERVING after its watch saw it go, to stand
    /// for a watch that has not yet seen it (the lag is too short to hit on purpose).
    func set(_ index: Int, _ status: InstanceHealth) {
        health.withLock { $0[index] = status }
    }
}

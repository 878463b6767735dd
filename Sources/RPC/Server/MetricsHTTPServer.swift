// A Prometheus text endpoint without a web framework (docs/rpc.md §d): NIO's own HTTP/1 codec
// (NIOHTTP1, already in the dependency graph through swift-nio).
import NIOCore
import NIOHTTP1
import NIOPosix
public import Prometheus
public import ServiceLifecycle

/// Serves `GET /metrics` (Prometheus text format 0.0.4) from a `PrometheusCollectorRegistry`, plus
/// the process's CPU time (``ProcessCPUTime``);
/// every other path is 404, every other method 405. One response per connection
/// (`connection: close`), which is all a scraper needs.
public struct MetricsHTTPServer: Service {
    private let channel: NIOAsyncChannel<NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, Never>
    private let registry: PrometheusCollectorRegistry

    /// The bound port (useful with port 0).
    public var port: Int? { channel.channel.localAddress?.port }

    /// The bound address.
    public var host: String? { channel.channel.localAddress?.ipAddress }

    /// Where /metrics listens unless told otherwise: loopback, whatever the RPC listens on —
    /// the endpoint has no TLS and no authentication.
    public static let defaultHost = "127.0.0.1"

    /// The listen address: a command-line `override`, else the `configured` one, else
    /// ``defaultHost``. Never the RPC's host by inference.
    public static func listenHost(override: String?, configured: String?) -> String {
        override ?? configured ?? defaultHost
    }

    /// Binds at once (so a bad address fails at start-up, and port 0 is known); serves in `run()`.
    public static func bind(host: String, port: Int, registry: PrometheusCollectorRegistry) async throws -> MetricsHTTPServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: child
                    )
                }
            }
        return MetricsHTTPServer(channel: channel, registry: registry)
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await channel.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask { try? await serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            channel.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            for try await part in inbound {
                switch part {
                case .head(let requestHead): head = requestHead
                case .body: continue
                case .end:
                    guard let head else { return }
                    let (status, body) = respond(to: head)
                    var headers = HTTPHeaders()
                    headers.add(name: "content-type", value: status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain")
                    headers.add(name: "content-length", value: String(body.count))
                    headers.add(name: "connection", value: "close")
                    try await outbound.write(.head(HTTPResponseHead(version: head.version, status: status, headers: headers)))
                    try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body))))
                    try await outbound.write(.end(nil))
                    return
                }
            }
        }
    }

    private func respond(to head: HTTPRequestHead) -> (HTTPResponseStatus, [UInt8]) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        guard path == "/metrics" else { return (.notFound, Array("not found\n".utf8)) }
        guard head.method == .GET || head.method == .HEAD else { return (.methodNotAllowed, Array("GET only\n".utf8)) }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        buffer.append(contentsOf: ProcessCPUTime.exposition().utf8)
        return (.ok, head.method == .HEAD ? [] : buffer)
    }
}

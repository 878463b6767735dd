import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import RPC

/// The floor under `Verification.Ping`: one unary method, `custos.bench.v1.Bare/Ping`, with
/// Ping's own protobuf messages and serializers, served by grpc-swift 2 over the same transport
/// and mutual TLS as the service (``CustosServer/transport(_:)``) but with no interceptors, no
/// metrics and no handler work. `bench rpc` reports `Ping ÷ bare`: what Custos's per-call
/// machinery (authentication, size limit, per-call metrics) costs over grpc-swift itself.
struct BareRPCService: RegistrableRPCService {
    static let ping = MethodDescriptor(fullyQualifiedService: "custos.bench.v1.Bare", method: "Ping")

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(
            forMethod: Self.ping,
            deserializer: ProtobufDeserializer<Custos_V1_PingRequest>(),
            serializer: ProtobufSerializer<Custos_V1_PingResponse>()
        ) { request, _ in
            for try await _ in request.messages {}
            return StreamingServerResponse(single: ServerResponse(message: Custos_V1_PingResponse()))
        }
    }

    /// One call from a load client.
    static func call(_ client: RPCLoadGenerator.Client, options: CallOptions) async throws {
        _ = try await client.unary(
            request: ClientRequest(message: Custos_V1_PingRequest()), descriptor: ping,
            serializer: ProtobufSerializer<Custos_V1_PingRequest>(), deserializer: ProtobufDeserializer<Custos_V1_PingResponse>(),
            options: options
        ) { try $0.message }
    }

    /// Serves it on `endpoint` until `body` returns, passing the port it listens on.
    static func serve<Result: Sendable>(_ endpoint: ServerEndpoint, _ body: (Int) async throws -> Result) async throws -> Result {
        try await withGRPCServer(transport: try CustosServer.transport(endpoint), services: [BareRPCService()]) { server in
            guard let port = try await server.listeningAddress?.ipv4?.port else { throw LocalError.failed("the bare server has no IPv4 address") }
            return try await body(port)
        }
    }
}

/// `custos-bench bare-server`: the bare service in a process of its own (what `bench rpc
/// --server` starts, so that its bare phase, like the service, runs apart from the load
/// generator). Prints `port <n>` once listening; serves until its standard input closes.
struct BareServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bare-server",
        abstract: "Serve the bare gRPC service of `bench rpc` (started by `bench rpc --server`).",
        shouldDisplay: false
    )

    @OptionGroup var options: LocalOptions

    func run() async throws {
        let endpoint = try RPCBenchCommand.loopbackEndpoint(try options.loadConfiguration())
        try await BareRPCService.serve(endpoint) { port in
            // Unbuffered: the parent waits for this line.
            FileHandle.standardOutput.write(Data("port \(port)\n".utf8))
            // Until the parent closes our standard input (or exits).
            _ = await Task.detached { FileHandle.standardInput.readDataToEndOfFile() }.value
        }
    }
}

/// The bare server as a child process of the bench.
final class BareServerProcess {
    private let process: Process
    private let input: Pipe
    let port: Int

    /// Starts `custos-bench bare-server` with the same configuration options and waits for its port.
    init(configArguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path), let path = Bundle.main.executablePath {
            process.executableURL = URL(fileURLWithPath: path)
        }
        process.arguments = ["bare-server"] + configArguments
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw LocalError.failed("the bare server exited before listening (status \(process.isRunning ? -1 : process.terminationStatus))") }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("port "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw LocalError.failed("the bare server said \(text.debugDescription), not its port")
        }
        self.process = process
        self.input = input
        self.port = port
    }

    /// Its process id, for its CPU time in /proc.
    var pid: Int32 { process.processIdentifier }

    /// Closes its standard input and waits for it to exit.
    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

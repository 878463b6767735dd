import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import RPC
import SwiftProtobuf

/// How a remote command reaches the Admin RPC: flags override the environment, which overrides
/// the rpc section of config.json. The certificate is an officer's (mutual TLS); the second
/// officer of a key destruction uses their own (`--client-cert`/`--client-key` or
/// CUSTOS_CLIENT_CERT / CUSTOS_CLIENT_KEY).
struct RemoteOptions: ParsableArguments {
    @Option(help: "Path of config.json (default: CUSTOS_CONFIG, else .custos/config.json above the current directory).")
    var config: String?

    @Option(help: "Server as host:port, or several instances as host:port,host:port (round robin; default: CUSTOS_SERVER, else the rpc section of config.json).")
    var server: String?

    @Option(help: "Officer certificate, PEM (default: CUSTOS_CLIENT_CERT, else config.json).")
    var clientCert: String?

    @Option(help: "Officer private key, PEM, mode 0600 (default: CUSTOS_CLIENT_KEY, else config.json).")
    var clientKey: String?

    @Option(help: "CA that signed the server's certificate, PEM (default: config.json).")
    var ca: String?

    @Flag(help: "Talk plaintext to a server on loopback started with --plaintext-loopback (development).")
    var plaintextLoopback = false

    @Option(help: "Output format.") var output: OutputFormat = .table

    /// Runs `body` with an Admin client; server refusals exit 2, local problems 1.
    func withAdmin<R: Sendable>(_ body: @Sendable (Custos_V1_Admin.Client<HTTP2ClientTransport.Posix>) async throws -> R) async throws -> R {
        let environment = ProcessInfo.processInfo.environment
        let configuration = try? CustosConfiguration.load(explicitPath: config)
        let rpc = configuration?.rpc
        guard let address = server ?? environment["CUSTOS_SERVER"] ?? rpc.map({ "\($0.host):\($0.port)" }) else {
            throw LocalError.failed("no server address: pass --server host:port or run scripts/setup")
        }
        let addresses: ServiceAddresses
        do {
            addresses = try ServiceAddresses(parsing: address)
        } catch {
            throw LocalError.failed("--server: \(error)")
        }
        let security: HTTP2ClientTransport.Posix.TransportSecurity
        if plaintextLoopback {
            guard addresses.hosts.allSatisfy({ ["127.0.0.1", "localhost", "::1"].contains($0) }) else {
                throw LocalError.failed("--plaintext-loopback is for a loopback server only")
            }
            security = .plaintext
        } else {
            guard let certificate = clientCert ?? environment["CUSTOS_CLIENT_CERT"] ?? rpc?.clientCertificate,
                  let key = clientKey ?? environment["CUSTOS_CLIENT_KEY"] ?? rpc?.clientKey,
                  let caFile = ca ?? rpc?.caCertificate
            else { throw LocalError.failed("no client certificate, key or CA: pass --client-cert, --client-key and --ca, or run scripts/setup") }
            for file in [certificate, key, caFile] where !FileManager.default.isReadableFile(atPath: file) {
                throw LocalError.failed("cannot read \(file)")
            }
            security = RPCClientTLS(certificateChain: certificate, privateKey: key, serverCA: caFile).transportSecurity
        }
        // Every Admin call has a deadline: a command never hangs on a server that stopped answering.
        let deadline = MethodConfig(names: [MethodConfig.Name(service: "custos.v1.Admin")], timeout: .seconds(60))
        // A re-seal streams progress for as long as it runs; cut off, it continues next time.
        let reseal = MethodConfig(names: [MethodConfig.Name(service: "custos.v1.Admin", method: "ResealKeys")], timeout: .seconds(6 * 3600))
        // Ending a biometric overlap deletes the version's remaining templates in a transaction
        // the server allows 2 minutes (``TenantKeyring/BiometricOverlapClose``): the call may take
        // as long, and a client deadline would roll it back.
        let overlapEnds = MethodConfig(
            names: ["ApproveBiometricOverlapEnd", "RetireKey"].map { MethodConfig.Name(service: "custos.v1.Admin", method: $0) }, timeout: .seconds(150)
        )
        // Several instances: round robin, reads retried on another (``RoundRobinClient``).
        let transport = try RoundRobinClient.transport(addresses, security: security, methodConfigs: [deadline, reseal, overlapEnds])
        do {
            return try await withGRPCClient(transport: transport) { client in
                try await body(Custos_V1_Admin.Client(wrapping: client))
            }
        } catch let error as RPCError {
            FileHandle.standardError.write(Data("custos: server: \(error.code): \(error.message)\n".utf8))
            throw ExitCode(2)
        }
    }

    /// Prints a response as protobuf JSON (`--output json`, key purposes and states as users
    /// spell them: ``UserFacingNames``) or with `table`.
    func print(_ message: some SwiftProtobuf.Message, table: () -> String) throws {
        switch output {
        case .json:
            Swift.print(try UserFacingNames.json(message))
        case .table:
            Swift.print(table())
        }
    }
}

/// Options the remote commands share: a tenant.
/// An option's value for a `UInt32` request field: out of `range` is a local error (exit 1)
/// naming the option, not a value clamped to 0 or `UInt32.max` that the server then refuses.
func wireUInt32(_ value: Int, option: String, in range: ClosedRange<Int>) throws -> UInt32 {
    guard range.contains(value), let wire = UInt32(exactly: value) else {
        throw LocalError.failed("\(option): between \(range.lowerBound) and \(range.upperBound)")
    }
    return wire
}

/// A key version's option (`--version`): 1 or more.
func versionArgument(_ version: Int) throws -> UInt32 {
    try wireUInt32(version, option: "--version", in: 1...Int(UInt32.max))
}

func tenantArgument(_ text: String) throws -> String {
    guard TenantIDShape.valid(text) else { throw LocalError.failed("not a tenant id (a UUID): \(text)") }
    return text.lowercased()
}

enum TenantIDShape {
    static func valid(_ text: String) -> Bool { UUID(uuidString: text) != nil && text.utf8.count == 36 }
}

/// Text columns for tables.
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text.padding(toLength: width, withPad: " ", startingAt: 0)
}

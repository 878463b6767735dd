import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import HSM
import Foundation
import SecureMemory
import RPC

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Standard Webhooks: secret and ed25519 over the Admin RPC; sign (local: the HSM) and verify (local, no HSM) to test receivers.",
        subcommands: [Secret.self, Ed25519.self, Sign.self, Verify.self]
    )

    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (or rotate to) a new v1 secret; printed once as whsec_… (over the Admin RPC).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Seconds the previous secret keeps signing (0 after a leak).") var overlap: UInt32 = 86_400

        func run() async throws {
            let id = try tenantArgument(tenant)
            let overlap = overlap
            let response = try await remote.withAdmin {
                try await $0.createWebhookSecret(.with { $0.tenantID = id; $0.overlapSeconds = overlap })
            }
            switch remote.output {
            case .json: try remote.print(response) { "" }
            case .table:
                FileHandle.standardError.write(Data("webhook secret v\(response.version); shown once:\n".utf8))
                print(response.secret)
            }
        }
    }

    struct Ed25519: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (or rotate to) a v1a Ed25519 key in the HSM; prints the whpk_… public key (over the Admin RPC).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Seconds the previous key keeps signing.") var overlap: UInt32 = 86_400

        func run() async throws {
            let id = try tenantArgument(tenant)
            let overlap = overlap
            let response = try await remote.withAdmin {
                try await $0.createWebhookEd25519Key(.with { $0.tenantID = id; $0.overlapSeconds = overlap })
            }
            try remote.print(response) { "v1a key v\(response.version): \(response.publicKey)" }
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the webhook-signature header for a body file, to test receivers (local: talks to the HSM directly).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "webhook-id.") var id: String
        @Option(help: "webhook-timestamp (unix seconds; default now).") var timestamp: Int64?
        @Option(help: "File with the exact body bytes.") var bodyFile: String

        func run() async throws {
            let tenantValue = try tenantID(tenant)
            guard let body = FileManager.default.contents(atPath: bodyFile) else { throw LocalError.failed("cannot read \(bodyFile)") }
            let time = timestamp ?? Int64(Date().timeIntervalSince1970)
            let header = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                let header = try await context.webhooks.signatureHeader(tenant: tenantValue, id: id, timestamp: time, body: Array(body))
                // A local signature is a use of the tenant's webhook key like any other: audited
                // before it is shown (no entry, no signature). The body stays out of the entry.
                try await context.audit.append(
                    tenant: tenantValue, actor: "local:\(NSUserName())", action: .webhookSignLocal, target: id,
                    details: ["timestamp": "\(time)", "bytes": "\(body.count)"]
                )
                return header
            }
            print("webhook-id: \(id)\nwebhook-timestamp: \(time)\nwebhook-signature: \(header)")
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a delivery like a receiver would (no HSM): secret from a 0600 file, ±5 minutes."
        )
        @Option(help: "File holding whsec_… (mode 0600).") var secretFile: String?
        @Option(help: "A whpk_… public key (v1a).") var publicKey: String?
        @Option(help: "webhook-id.") var id: String
        @Option(help: "webhook-timestamp.") var timestamp: String
        @Option(help: "webhook-signature header value.") var signature: String
        @Option(help: "File with the exact body bytes.") var bodyFile: String

        func run() async throws {
            guard let body = FileManager.default.contents(atPath: bodyFile) else { throw LocalError.failed("cannot read \(bodyFile)") }
            var secrets = [SecretBytes]()
            if let secretFile {
                // From its 0600 file to the decoded key in protected memory only.
                secrets.append(try StandardWebhooks.decodeSecret(try PINSource.file(path: secretFile).read()))
            }
            let keys = try publicKey.map { [try StandardWebhooks.decodePublicKey($0)] } ?? []
            try WebhookVerifier(secrets: secrets, publicKeys: keys)
                .verify(id: id, timestamp: timestamp, signatureHeader: signature, body: Array(body), now: Int64(Date().timeIntervalSince1970))
            print("signature valid")
        }
    }
}

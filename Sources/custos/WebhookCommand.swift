import ArgumentParser
import Custody
import HSM
import Foundation
import PKCS11

struct WebhookCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "webhook",
        abstract: "Standard Webhooks keys and signatures (local: talks to the HSM directly; front-ends use the Webhooks RPC).",
        subcommands: [Secret.self, Ed25519.self, Sign.self, Verify.self]
    )

    struct Secret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (or rotate to) a new v1 secret; printed once as whsec_….")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Seconds the previous secret keeps signing (0 after a leak).") var overlap = 86_400
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            let (version, secret) = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.webhooks.createSecret(tenant: id, overlap: .seconds(overlap), actor: actor)
            }
            FileHandle.standardError.write(Data("webhook secret v\(version); shown once:\n".utf8))
            secret.withUnsafeBytes { FileHandle.standardOutput.write(Data($0) + Data("\n".utf8)) }
        }
    }

    struct Ed25519: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create (or rotate to) a v1a Ed25519 key in the HSM; prints the whpk_… public key.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Seconds the previous key keeps signing.") var overlap = 86_400
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            let (version, publicKey) = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.webhooks.createEd25519Key(tenant: id, overlap: .seconds(overlap), actor: actor)
            }
            print("v1a key v\(version): \(publicKey)")
        }
    }

    struct Sign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the webhook-signature header for a body file (for testing receivers).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "webhook-id.") var id: String
        @Option(help: "webhook-timestamp (unix seconds; default now).") var timestamp: Int64?
        @Option(help: "File with the exact body bytes.") var bodyFile: String

        func run() async throws {
            let tenantValue = try tenantID(tenant)
            guard let body = FileManager.default.contents(atPath: bodyFile) else { throw LocalError.failed("cannot read \(bodyFile)") }
            let time = timestamp ?? Int64(Date().timeIntervalSince1970)
            let header = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.webhooks.signatureHeader(tenant: tenantValue, id: id, timestamp: time, body: Array(body))
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
                let text = try PINSource.file(path: secretFile).read().withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
                secrets.append(try StandardWebhooks.decodeSecret(text))
            }
            let keys = try publicKey.map { [try StandardWebhooks.decodePublicKey($0)] } ?? []
            try WebhookVerifier(secrets: secrets, publicKeys: keys)
                .verify(id: id, timestamp: timestamp, signatureHeader: signature, body: Array(body), now: Int64(Date().timeIntervalSince1970))
            print("signature valid")
        }
    }
}

import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import Foundation
import SecureMemory
import RPC

struct APIKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "API keys: issue, revoke, list (over the Admin RPC); verify (local).",
        subcommands: [Issue.self, Revoke.self, List.self, Verify.self]
    )

    static func row(_ key: Custos_V1_APIKeyInfo) -> String {
        "\(pad(key.keyID, 12))\(pad(key.revokedAt.seconds > 0 ? "revoked" : "active", 9))\(pad("pepper v\(key.pepperVersion)", 11))\(pad(key.scopes.joined(separator: ","), 30))\(key.label)"
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a key; it is printed once (to standard output) and never stored.")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Scope (repeatable): verification, webhooks, keys.") var scope: [String] = ["verification"]
        @Option(help: "A label for the key (not secret).") var label = ""
        @Option(help: "Lifetime in seconds (0: no expiry; at most 2 years, 63072000).") var ttl: UInt64 = 0

        func run() async throws {
            let id = try tenantArgument(tenant)
            let (scopes, label, ttl) = (scope, label, ttl)
            let response = try await remote.withAdmin {
                try await $0.issueAPIKey(.with { $0.tenantID = id; $0.scopes = scopes; $0.label = label; $0.ttlSeconds = ttl })
            }
            switch remote.output {
            case .json: try remote.print(response) { "" }
            case .table:
                FileHandle.standardError.write(Data("API key \(response.info.keyID) for tenant \(id); shown once:\n".utf8))
                print(response.apiKey)
            }
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key; every instance refuses it within about a second.")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "The key's public id (11 characters).") var keyID: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            let id = try tenantArgument(tenant)
            // Before the prompt repeats it: a whole key pasted here must go no further.
            guard APIKeyFormat.isKeyID(keyID) else {
                throw LocalError.failed("--key-id: the key's public id (11 characters, as `apikey list` shows), not the key")
            }
            try confirm("Revoke API key \(keyID)?", yes: yes)
            let keyID = keyID
            let response = try await remote.withAdmin { try await $0.revokeAPIKey(.with { $0.tenantID = id; $0.keyID = keyID }) }
            try remote.print(response) { response.revoked ? "revoked \(keyID)" : "\(keyID) was already revoked" }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A tenant's keys (ids, scopes, dates; never a secret).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Flag(help: "Only live keys still hashed under an older apikey-pepper version (ask their owners to rotate them).") var stale = false

        func run() async throws {
            let id = try tenantArgument(tenant)
            let response = try await remote.withAdmin { try await $0.listAPIKeys(.with { $0.tenantID = id; $0.stale = stale }) }
            try remote.print(response) { response.keys.map(APIKeyCommand.row).joined(separator: "\n") }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a key read from standard input, never the command line (local: talks to the HSM and database).")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let key = try StandardInputSecret.read("API key")
            let verified = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                try await context.apiKeys.verify(key)
            }
            print("valid: tenant \(verified.tenant), key id \(verified.keyID), scopes \(verified.scopes.joined(separator: " "))")
        }
    }
}

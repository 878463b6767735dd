import ArgumentParser
import Custody
import Foundation
import PKCS11

struct APIKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikey",
        abstract: "API keys: issue, verify, revoke, list (local for now).",
        subcommands: [Issue.self, Verify.self, Revoke.self, List.self]
    )

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Issue a key; it is printed once and never stored.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(name: .customLong("scope"), help: "A scope (repeat for several).") var scopes: [String] = []
        @Option(help: "A label for listings.") var label = ""
        @Option(help: "Days until it expires (default: never).") var expiresInDays: Int?
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            let expiry = expiresInDays.map { Date().addingTimeInterval(Double($0) * 86_400) }
            let issued = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.apiKeys.issue(tenant: id, scopes: scopes, label: label, expiresAt: expiry, actor: actor)
            }
            FileHandle.standardError.write(Data("key id \(issued.keyID); the key below is shown once:\n".utf8))
            issued.key.withUnsafeBytes { FileHandle.standardOutput.write(Data($0) + Data("\n".utf8)) }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Verify a key read from standard input (never from the command line).")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let key = SecretBytes(readSecretFromStandardInput())
            let verified = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.apiKeys.verify(key)
            }
            print("valid: tenant \(verified.tenant), key id \(verified.keyID), scopes \(verified.scopes.joined(separator: " "))")
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a key; every instance refuses it within about a second.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "The key's public id (11 characters).") var keyID: String
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            try confirm("Revoke API key \(keyID)?", yes: yes)
            let revoked = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.apiKeys.revoke(tenant: id, keyID: keyID, actor: actor)
            }
            guard revoked else { throw LocalError.failed("no live key \(keyID) for tenant \(id)") }
            print("revoked \(keyID)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A tenant's keys (ids, scopes, dates; never a secret).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Output format.") var output: OutputFormat = .table

        struct Row: Encodable {
            let keyID: String
            let label: String
            let scopes: [String]
            let pepperVersion: Int
            let createdAt: Date?
            let expiresAt: Date?
            let lastUsedAt: Date?
            let revokedAt: Date?
        }

        func run() async throws {
            let id = try tenantID(tenant)
            let keys = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.apiKeys.list(tenant: id)
            }
            let rows = keys.map {
                Row(keyID: $0.keyID, label: $0.label, scopes: $0.scopes, pepperVersion: $0.pepperVersion, createdAt: $0.createdAt,
                    expiresAt: $0.expiresAt, lastUsedAt: $0.lastUsedAt, revokedAt: $0.revokedAt)
            }
            switch output {
            case .json: print(try encodeJSON(rows))
            case .table:
                for row in rows {
                    print("\(row.keyID)  \(row.revokedAt == nil ? "live   " : "revoked")  \(row.scopes.joined(separator: ","))  \(row.label)")
                }
            }
        }
    }
}

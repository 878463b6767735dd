import ArgumentParser
import Custody
import Storage

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Tenants (local for now; over the Admin RPC once it exists).",
        subcommands: [Create.self, List.self, Disable.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant and version 1 of its keys.")
        @OptionGroup var options: LocalOptions
        @Option(help: "A handle for the tenant: lower-case letters, digits, '-'.") var label: String
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let tenant = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.createTenant(label: label, actor: actor)
            }
            switch output {
            case .json: print(try encodeJSON(tenant))
            case .table: print("created tenant \(tenant.label): \(tenant.id)")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let tenants = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await TenantStore(context.database).list()
            }
            switch output {
            case .json: print(try encodeJSON(tenants))
            case .table: for tenant in tenants { print("\(tenant.id)  \(tenant.status.padding(toLength: 9, withPad: " ", startingAt: 0))  \(tenant.label)") }
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a tenant.")
        @OptionGroup var options: LocalOptions
        @Argument(help: "Tenant id.") var tenant: String
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            try confirm("Disable tenant \(id)?", yes: yes)
            let changed = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.setTenantActive(id, false, actor: actor)
            }
            guard changed else { throw LocalError.failed("no tenant \(id)") }
            print("disabled tenant \(id)")
        }
    }
}

import ArgumentParser
import CustosCommandLine
import Composition
import Storage

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db", abstract: "Database maintenance (local).", subcommands: [Migrate.self]
    )

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations as the owner role (local).")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let configuration = try options.loadConfiguration()
            let runtimeOptions = CustosRuntime.Options.cli()
            let applied = try await CustosRuntime.withDatabase(configuration, role: .owner, options: runtimeOptions) { owner in
                try await Migrations.migrate(owner, serviceRole: configuration.serviceUser, logger: runtimeOptions.logger)
            }
            print(applied.isEmpty ? "schema is at version \(Migrations.latestVersion); nothing to do" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
        }
    }
}

import ArgumentParser
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
            let logger = makeLogger()
            let owner = try Database(configuration: try configuration.databaseConfiguration(role: .owner), logger: logger)
            owner.start()
            defer { Task { await owner.shutdown() } }
                        let applied = try await Migrations.migrate(owner, serviceRole: configuration.serviceUser, logger: logger)
            await owner.shutdown()
            print(applied.isEmpty ? "schema is at version \(Migrations.latestVersion); nothing to do" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
        }
    }
}

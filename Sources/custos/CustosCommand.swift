import ArgumentParser

@main
struct CustosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "custos",
        abstract: "HSM-backed tokenization and key custody.",
        discussion: """
        Local commands talk to the HSM and the database directly, with the configuration \
        that scripts/setup wrote to .custos/config.json (found by searching upwards from the \
        current directory, or given by --config or CUSTOS_CONFIG).
        Exit codes: 0 ok, 1 local error, 2 server error.
        """,
        subcommands: [
            HSMCommand.self, DatabaseCommand.self, TenantCommand.self, KeyCommand.self, APIKeyCommand.self,
            WebhookCommand.self, AuditCommand.self, SubjectCommand.self, RetentionCommand.self, EvalCommand.self, BenchCommand.self,
            CeremonyCommand.self, ServeCommand.self,
        ]
    )
}

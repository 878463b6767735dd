import ArgumentParser

@main
struct CustosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "custos",
        abstract: "HSM-backed tokenization and key custody.",
        discussion: """
        Remote commands (tenant, key, apikey issue/revoke/list, webhook secret/ed25519, subject, \
        retention, audit tail/export, certificate) call the Admin RPC of a running `custos serve` over \
        mutual TLS with an officer certificate. Commands marked (local) talk to the HSM and the \
        database directly (serve, hsm, db, ceremony, audit verify, webhook \
        sign/verify, key reconcile, apikey verify). \
        Both read .custos/config.json, which scripts/setup wrote (found by searching upwards \
        from the current directory, or given by --config or CUSTOS_CONFIG).
        Benchmarks and the biometric evaluation are in `custos-bench`.
        Exit codes: 0 ok, 1 local error, 2 server error, 64 invalid arguments.
        """,
        subcommands: [
            HSMCommand.self, DatabaseCommand.self, TenantCommand.self, KeyCommand.self, APIKeyCommand.self,
            WebhookCommand.self, AuditCommand.self, SubjectCommand.self, RetentionCommand.self,
            CeremonyCommand.self, ServeCommand.self, CertificateCommand.self, MovedBenchCommand.self, MovedEvalCommand.self,
        ]
    )
}

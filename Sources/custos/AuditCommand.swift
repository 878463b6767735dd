import ArgumentParser
import Custody

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "The tamper-evident audit log (local).", subcommands: [Verify.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every entry's hash chain and HSM MAC and the anchored head; report the first broken entry (local)."
        )
        @OptionGroup var options: LocalOptions
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let result = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.audit.verify()
            }
            switch output {
            case .json: print(try encodeJSON(result))
            case .table:
                if result.isIntact {
                    print("audit log intact: \(result.entriesChecked) entries, anchored head \(result.anchoredSeq.map(String.init) ?? "none")")
                } else {
                    print("audit log BROKEN at entry \(result.firstBroken.map(String.init) ?? "?"): \(result.problem ?? "")")
                }
            }
            if !result.isIntact { throw ExitCode(1) }
        }
    }
}

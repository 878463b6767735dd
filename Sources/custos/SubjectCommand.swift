import ArgumentParser
import Composition
import CustosModel
import Foundation
import Verification

/// The verification core composed over a custody context, for the data-protection commands.
extension CustodyContext {
    var subjectRights: SubjectRights {
        let sealer = CustodyPersonalDataSealer(pool: pool, keyring: keyring)
        let audit = AuditLogRecorder(audit)
        let core = VerificationService(database: database, policies: TenantPolicies(database: database, audit: audit))
        return SubjectRights(
            database: database, core: core, sealer: sealer, referencer: CustodySubjectReferencer(pool: pool, keyring: keyring), audit: audit
        )
    }

    var retentionJob: RetentionJob {
        let audit = AuditLogRecorder(audit)
        return RetentionJob(database: database, core: VerificationService(database: database, policies: TenantPolicies(database: database, audit: audit)), audit: audit)
    }
}

struct SubjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subject",
        abstract: "One data subject's data: export (GDPR Art. 15/20) or erase (Art. 17).",
        discussion: "The subject's external id is read from standard input, never from the command line (it may be an email).",
        subcommands: [Export.self, Erase.self]
    )

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print everything held about one subject as JSON (names decrypted for the tenant).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Who does this (recorded in the audit log).") var actor = "dpo"

        func run() async throws {
            let id = try tenantID(tenant)
            let externalID = PersonalText(String(decoding: readSecretFromStandardInput(), as: UTF8.self))
            let export = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.subjectRights.export(tenant: id, externalID: externalID, actor: actor)
            }
            print(String(decoding: try export.json(), as: UTF8.self))
        }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Erase one subject's fingerprints and sessions; the audit log records counts only.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false
        @Option(help: "Who does this (recorded in the audit log).") var actor = "dpo"
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let id = try tenantID(tenant)
            try confirm("Erase this subject's data in tenant \(id)?", yes: yes)
            let externalID = PersonalText(String(decoding: readSecretFromStandardInput(), as: UTF8.self))
            let counts = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.subjectRights.erase(tenant: id, externalID: externalID, actor: actor)
            }
            switch output {
            case .json: print(try encodeJSON(counts))
            case .table: print("erased: \(counts.templates) fingerprints, \(counts.sessions) sessions")
            }
        }
    }
}

struct RetentionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "Delete fingerprints idle past each tenant's retention period (default 90 days).",
        subcommands: [Run.self]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the retention job once (schedule it daily, e.g. from cron or a systemd timer).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Only this tenant (default: every tenant).") var tenant: String?
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let id = try tenant.map(tenantID)
            let deleted = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.retentionJob.run(tenant: id, actor: "retention")
            }
            switch output {
            case .json: print(try encodeJSON(Dictionary(uniqueKeysWithValues: deleted.map { ($0.key.rawValue, $0.value) })))
            case .table:
                if deleted.isEmpty { print("nothing to delete") }
                for (tenant, count) in deleted.sorted(by: { $0.key.rawValue < $1.key.rawValue }) { print("\(tenant): \(count) fingerprints deleted") }
            }
        }
    }
}

import ArgumentParser
import Foundation
import RPC
import SecureMemory

struct SubjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subject",
        abstract: "One data subject's data: export (GDPR Art. 15/20) or erase (Art. 17), over the Admin RPC.",
        discussion: "The subject's external id is read from standard input, never from the command line (it may be an email).",
        subcommands: [Export.self, Erase.self]
    )

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print everything held about one subject as JSON (names decrypted for the tenant).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String

        func run() async throws {
            let id = try tenantArgument(tenant)
            let externalID = try StandardInputSecret.read("the subject's external id").withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            let export = try await remote.withAdmin { try await $0.exportSubjectInPages(tenantID: id, externalID: externalID) }
            print(String(decoding: export, as: UTF8.self))
        }
    }

    struct Erase: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Erase one subject's fingerprints and sessions; the audit log records counts only.")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            let id = try tenantArgument(tenant)
            try confirm("Erase this subject's data in tenant \(id)?", yes: yes)
            let externalID = try StandardInputSecret.read("the subject's external id").withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
            let response = try await remote.withAdmin {
                try await $0.eraseSubject(.with { $0.tenantID = id; $0.subjectExternalID = externalID })
            }
            try remote.print(response) { "erased: \(response.templatesDeleted) fingerprints, \(response.sessionsDeleted) sessions" }
        }
    }
}

struct RetentionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retention",
        abstract: "Delete fingerprints idle, and verification sessions ended, longer than each tenant's retention period (default 90 days), over the Admin RPC.",
        subcommands: [Run.self]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the retention job once (schedule it daily, e.g. from cron or a systemd timer).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Only this tenant (default: every tenant).") var tenant: String?

        func run() async throws {
            let id = try tenant.map(tenantArgument)
            let response = try await remote.withAdmin { try await $0.runRetention(.with { if let id { $0.tenantID = id } }) }
            try remote.print(response) {
                response.tenantsWithDeletions == 0 ? "nothing to delete"
                    : "\(response.templatesDeleted) fingerprints and \(response.sessionsDeleted) sessions deleted in \(response.tenantsWithDeletions) tenants"
            }
        }
    }
}

struct CertificateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certificate",
        abstract: "Client certificates: revoke an officer's or a front-end's (over the Admin RPC).",
        subcommands: [Revoke.self]
    )

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refuse a certificate from now on, by serial (`openssl x509 -noout -serial -in CERT`).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Serial number, hex.") var serial: String
        @Option(help: "Who it was issued to, for the record.") var subject = ""
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Revoke certificate \(serial)?", yes: yes)
            let (serial, subject) = (serial.lowercased().replacingOccurrences(of: "serial=", with: ""), subject)
            let response = try await remote.withAdmin { try await $0.revokeCertificate(.with { $0.serial = serial; $0.subject = subject }) }
            try remote.print(response) { "revoked certificate \(serial)" }
        }
    }
}

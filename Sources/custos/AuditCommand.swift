import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import Foundation
import RPC
import SwiftProtobuf

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "The tamper-evident audit log: tail and export (over the Admin RPC), verify and reset-anchor (local).",
        subcommands: [Tail.self, Verify.self, ResetAnchor.self, Export.self]
    )

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every entry's hash chain and HSM MAC and the anchored head; report the first broken entry (local)."
        )
        @OptionGroup var options: LocalOptions
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let result = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                try await context.audit.verify()
            }
            switch output {
            case .json: print(try encodeJSON(result))
            case .table:
                if result.isIntact {
                    print("audit log intact: \(result.entriesChecked) entries, anchored head \(result.anchoredSeq.map(String.init) ?? "none"), HSM anchor \(result.hsmAnchoredSeq.map(String.init) ?? "none on this token")")
                    if let unconfirmed = result.unconfirmedSeq {
                        print("note: entry \(unconfirmed) was anchored but is absent: its transaction rolled back, or the newest entry was deleted")
                    }
                } else {
                    print("audit log BROKEN at entry \(result.firstBroken.map(String.init) ?? "?"): \(result.problem ?? "")")
                }
            }
            if !result.isIntact { throw ExitCode(1) }
        }
    }

    struct ResetAnchor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset-anchor",
            abstract: "After a sanctioned database restore: drop the HSM audit anchor, set this instance's anchor file aside, record the reset (local).",
            discussion: "Appends are refused while the log stands behind its HSM anchor. Run this only after the restore was approved; the reset and the head the anchor had recorded become the next audit entry."
        )
        @OptionGroup var options: LocalOptions
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Reset the audit anchor (only after an approved database restore)?", yes: yes)
            let previous = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                try await context.audit.resetAnchor(actor: "local:\(NSUserName())")
            }
            print("audit anchor reset; it had recorded entry \(previous.map(String.init) ?? "none")")
        }
    }

    struct Tail: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The newest entries (actor, action, target, counts; never personal data).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "How many entries (at most 1000).") var limit: UInt32 = 20

        func run() async throws {
            let limit = limit
            let response = try await remote.withAdmin { try await $0.auditTail(.with { $0.limit = limit }) }
            try remote.print(response) {
                response.entries.map { entry in
                    let details = entry.details.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                    return "\(pad(String(entry.sequence), 6))\(pad(entry.actor, 22))\(pad(entry.action, 26))\(pad(entry.target, 24))\(details)"
                }.joined(separator: "\n")
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Audit entries as JSON lines for a SIEM, from --since on; --follow keeps writing new ones.",
            discussion: "One JSON object per line: sequence, time, tenant, actor, action, target, details, hash, previous_hash (docs/audit.md). With --follow the command polls the server every --poll-seconds with the last sequence written as its cursor, so no entry is missed or written twice; stop it with Ctrl-C."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Entries at or after this RFC 3339 time (e.g. 2026-12-05T16:50:00Z).") var since: String
        @Flag(help: "Keep writing new entries as they are appended.") var follow = false
        @Option(help: "Seconds between polls with --follow (1...60).") var pollSeconds = 2

        func run() async throws {
            let start: Date
            do {
                start = try AuditExportFormat.time(since)
            } catch {
                throw LocalError.failed(error.description)
            }
            guard (1...60).contains(pollSeconds) else { throw LocalError.failed("--poll-seconds: between 1 and 60, not \(pollSeconds)") }
            let (follow, pollSeconds) = (follow, pollSeconds)
            try await remote.withAdmin { admin in
                var cursor: UInt64 = 0
                while true {
                    let page = try await admin.auditExport(.with {
                        $0.since = Google_Protobuf_Timestamp(date: start)
                        $0.afterSequence = cursor
                        $0.limit = 1_000
                    })
                    // Written and flushed page by page: a SIEM reading a pipe sees entries at once.
                    let lines = try page.entries.map(AuditExportFormat.line)
                    if !lines.isEmpty { FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8)) }
                    cursor = page.nextAfterSequence
                    if page.entries.count == 1_000 { continue }
                    if !follow { return }
                    try await Task.sleep(for: .seconds(pollSeconds))
                }
            }
        }
    }
}

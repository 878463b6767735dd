import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import Foundation
import RPC

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "The tamper-evident audit log: tail (over the Admin RPC), verify and reset-anchor (local).",
        subcommands: [Tail.self, Verify.self, ResetAnchor.self]
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
}

import ArgumentParser
import CustosCommandLine
import CustosModel
import Foundation
import GRPCCore
import RPC

// Watching migration and re-sealing: `custos key status`, `custos key reseal`.
extension KeyCommand {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per purpose and version: state, what is still stored under it, and how much has moved to the active version."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String

        func run() async throws {
            let id = try tenantArgument(tenant)
            let response = try await remote.withAdmin { try await $0.keyStatus(.with { $0.tenantID = id }) }
            try remote.print(response) { Self.table(response) }
        }

        /// The HSM list's refusal, which wins over the row's state ("-": the list does not name it).
        static func listed(_ status: Custos_V1_KeyVersionStatus) -> String {
            switch status.listed {
            case .destroyed: "destroyed"
            case .tenantOffboarding: "tenant offboarding"
            case .disabled: "disabled"
            case .destructionScheduled: "destruction due " + ISO8601DateFormatter().string(from: status.listedDestructionDueAt.date)
            case .unspecified, .UNRECOGNIZED: "-"
            }
        }

        static func table(_ response: Custos_V1_KeyStatusResponse) -> String {
            var lines = ["PURPOSE         VERSION  STATE      RETIRING UNTIL        TEMPLATES  SEALED  SESSIONS  API KEYS  REFERENCES  SIGNING  HSM LIST"]
            for status in response.versions {
                let key = status.key
                let until = key.hasRetiringUntil ? ISO8601DateFormatter().string(from: key.retiringUntil.date) : "-"
                lines.append(
                    pad(UserFacingNames.purpose(key.purpose), 16) + "v" + pad(String(key.version), 7) + pad(UserFacingNames.state(key.state), 11)
                        + pad(until, 22) + pad(String(status.templates), 11) + pad(String(status.sealedRecords), 8) + pad(String(status.sessions), 10)
                        + pad(String(status.apiKeys), 10) + pad(String(status.references), 12) + pad(status.signing ? "yes" : "-", 9) + Self.listed(status)
                )
            }
            lines.append("")
            lines.append("PURPOSE         ACTIVE  STORED VALUES  UNDER ACTIVE  MIGRATED")
            for purpose in response.purposes {
                lines.append(
                    pad(UserFacingNames.purpose(purpose.purpose), 16) + pad(purpose.activeVersion == 0 ? "-" : "v\(purpose.activeVersion)", 8)
                        + pad(String(purpose.storedValues), 15) + pad(String(purpose.underActive), 14) + String(format: "%.1f %%", purpose.percentMigrated)
                )
            }
            return lines.joined(separator: "\n")
        }
    }

    struct Reseal: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-seal every sealed record still under an older data version under the active one (batches; resumable: run again to continue)."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Key purpose (data: the only purpose with sealed records).") var purpose: KeyPurpose
        @Option(help: "Records per batch (one transaction each), 1 to 1000.") var batchSize = 100

        func run() async throws {
            guard (1...1_000).contains(batchSize) else { throw LocalError.failed("--batch-size: 1 to 1000") }
            let id = try tenantArgument(tenant)
            let (wire, batch) = (purpose.wire, UInt32(batchSize))
            // A bar on a terminal; JSON lines (one message each) for scripts and logs.
            let bar = remote.output == .table && isatty(STDOUT_FILENO) == 1
            let json = remote.output == .json || !bar
            let last = try await remote.withAdmin { admin in
                try await admin.resealKeys(.with { $0.tenantID = id; $0.purpose = wire; $0.batchSize = batch }) { response in
                    var last: Custos_V1_ResealKeysProgress?
                    for try await progress in response.messages {
                        last = progress
                        if json {
                            print(Self.jsonLine(progress))
                        } else {
                            Self.draw(progress)
                        }
                    }
                    return last
                }
            }
            guard let last, last.done else { throw LocalError.failed("the server ended the run early: run `custos key reseal` again to continue") }
            if !json {
                print("\nre-sealed \(last.resealed) record(s) under data v\(last.targetVersion) in \(last.batches) batch(es); "
                    + (last.remaining == 0 ? "none left under older versions" : "\(last.remaining) still under older versions (another run holds them): run again"))
            }
        }

        /// One JSON object per line, every field present (protobuf JSON would drop zeros and
        /// quote 64-bit counts), for scripts and log collectors.
        static func jsonLine(_ progress: Custos_V1_ResealKeysProgress) -> String {
            "{\"target_version\":\(progress.targetVersion),\"resealed\":\(progress.resealed),\"remaining\":\(progress.remaining),"
                + "\"total\":\(progress.total),\"batches\":\(progress.batches),\"done\":\(progress.done)}"
        }

        static func draw(_ progress: Custos_V1_ResealKeysProgress) {
            let total = max(progress.total, progress.resealed + progress.remaining)
            let fraction = total == 0 ? 1 : Double(total - progress.remaining) / Double(total)
            let width = 30
            let filled = Int((fraction * Double(width)).rounded(.down))
            let line = "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
                + String(format: "%5.1f %%", fraction * 100) + "  \(progress.resealed) re-sealed, \(progress.remaining) left (data v\(progress.targetVersion))"
            FileHandle.standardOutput.write(Data(line.utf8))
        }
    }
}

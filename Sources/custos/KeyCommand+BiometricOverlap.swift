import ArgumentParser
import CustosCommandLine
import RPC

// Ending a biometric rotation's overlap before its window closes: one officer asks, another
// approves, and the approval ends it.
extension KeyCommand {
    struct RequestOverlapEnd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "request-end-overlap",
            abstract: "First officer: ask to end a biometric version's overlap now (subjects not yet migrated must re-enrol)."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "The old biometric version (retiring).") var version: Int

        func run() async throws {
            let id = try tenantArgument(tenant)
            let version = try versionArgument(version)
            let response = try await remote.withAdmin {
                try await $0.requestBiometricOverlapEnd(.with { $0.tenantID = id; $0.version = version })
            }
            try remote.print(response) {
                "request \(response.requestID): a different officer runs `custos key approve-end-overlap \(response.requestID)`"
            }
        }
    }

    struct ApproveOverlapEnd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve-end-overlap",
            abstract: "Second officer: approve, ending the overlap now (templates not migrated are dropped)."
        )
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("End the overlap of request \(request) now? Subjects not yet migrated lose their enrolment.", yes: yes)
            let request = request
            let response = try await remote.withAdmin { try await $0.approveBiometricOverlapEnd(.with { $0.requestID = request }) }
            try remote.print(response) { "overlap ended: \(response.templatesDropped) templates dropped; " + KeyCommand.row(response.key) }
        }
    }
}

public import ArgumentParser
import CustosCommandLine
import Composition
import Custody
import CustosModel
import Foundation
import RPC

extension KeyPurpose: ExpressibleByArgument {}

/// `--waiting-days` of a scheduled destruction or an offboarding, checked before asking the
/// server (which checks it too).
func waitingDaysArgument(_ days: Int) throws -> UInt32 {
    guard KeyDestructionApprovals.waitingDaysRange.contains(days) else {
        throw LocalError.failed(DestructionApprovalError.waitingDaysOutOfRange(days).description)
    }
    return UInt32(days)
}

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Tenant keys: list, rotate, retire, disable/enable, destruction by two officers (scheduled, cancellable), status and reseal (over the Admin RPC); reconcile (local).",
        subcommands: [
            List.self, Rotate.self, Retire.self, RequestDestruction.self, ApproveDestruction.self, Destroy.self, Reconcile.self,
            Status.self, Reseal.self, Disable.self, Enable.self, CancelDestruction.self, RequestOverlapEnd.self, ApproveOverlapEnd.self,
        ]
    )

    static func row(_ key: Custos_V1_KeyVersion) -> String {
        let purpose = UserFacingNames.purpose(key.purpose)
        let state = UserFacingNames.state(key.state)
        var line = "\(pad(purpose, 16))v\(pad(String(key.version), 7))\(pad(state, 11))\(pad(key.checkValue.uppercased(), 8))root KEK v\(key.rootKekVersion)"
        if key.state == .retiring && key.hasRetiringUntil {
            line += "  until \(Date(timeIntervalSince1970: TimeInterval(key.retiringUntil.seconds)).ISO8601Format())"
        }
        // Orthogonal to the state: a disabled or scheduled version refuses every use.
        if key.hasDisabledAt { line += "  DISABLED" }
        if key.hasDestructionDueAt { line += "  destruction due \(Date(timeIntervalSince1970: TimeInterval(key.destructionDueAt.seconds)).ISO8601Format())" }
        return line
    }

    /// A reconciled rotation, the purpose spelled as `--purpose` takes it.
    static func line(_ reconciliation: TenantKeyring.Reconciliation) -> String {
        switch reconciliation {
        case .completed(let tenant, let purpose, let version): "completed   \(tenant) \(purpose.rawValue) v\(version)"
        case .rolledBack(let tenant, let purpose, let version): "rolled back \(tenant) \(purpose.rawValue) v\(version)"
        case .tokenObjectsDestroyed(let tenant, let purpose, let version): "token objects destroyed \(tenant) \(purpose.rawValue) v\(version)"
        case .destructionCompleted(let tenant, let purpose, let version): "destruction completed \(tenant) \(purpose.rawValue) v\(version)"
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Versions of a tenant's keys, with check values (never key material).")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String

        func run() async throws {
            let id = try tenantArgument(tenant)
            let response = try await remote.withAdmin { try await $0.listKeys(.with { $0.tenantID = id }) }
            try remote.print(response) { (["PURPOSE         VERSION  STATE      KCV"] + response.keys.map(KeyCommand.row)).joined(separator: "\n") }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new version active; the old one retires (bio-seed and bio-prf rotate together; their old version keeps matching for the tenant's bio overlap days)."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Key purpose.") var purpose: KeyPurpose

        func run() async throws {
            let id = try tenantArgument(tenant)
            let wire = purpose.wire
            let response = try await remote.withAdmin { try await $0.rotateKey(.with { $0.tenantID = id; $0.purpose = wire }) }
            try remote.print(response) { response.activated.map { "active: " + KeyCommand.row($0) }.joined(separator: "\n") }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a retiring version's overlap now (a biometric version only once its window has ended: earlier needs two officers)."
        )
        @OptionGroup var remote: RemoteOptions
        @OptionGroup var key: KeyVersionOptions

        func run() async throws {
            let (id, wire, version) = try key.wire()
            let response = try await remote.withAdmin {
                try await $0.retireKey(.with { $0.tenantID = id; $0.purpose = wire; $0.version = version })
            }
            try remote.print(response) { "retired: " + KeyCommand.row(response.key) }
        }
    }

    struct RequestDestruction: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "request-destroy",
            abstract: "First officer: ask for a retired version's destruction (a second officer approves within 24 h); it is carried out --waiting-days after approval."
        )
        @OptionGroup var remote: RemoteOptions
        @OptionGroup var key: KeyVersionOptions
        @Option(help: "Days between approval and destruction, 7–30 (the version is unusable meanwhile; cancel-destroy undoes it).")
        var waitingDays = KeyDestructionApprovals.defaultWaitingDays

        func run() async throws {
            let days = try waitingDaysArgument(waitingDays)
            let (id, wire, version) = try key.wire()
            let response = try await remote.withAdmin {
                try await $0.requestKeyDestruction(.with { $0.tenantID = id; $0.purpose = wire; $0.version = version; $0.waitingDays = days })
            }
            try remote.print(response) {
                "destruction request \(response.requestID): a different officer runs `custos key approve-destroy \(response.requestID)`; "
                    + "it is carried out \(response.waitingDays) days after approval"
            }
        }
    }

    struct ApproveDestruction: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "approve-destroy", abstract: "Second officer: approve a destruction request.")
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String

        func run() async throws {
            let request = request
            let response = try await remote.withAdmin { try await $0.approveKeyDestruction(.with { $0.requestID = request }) }
            try remote.print(response) {
                "approved \(request): the version is unusable from now on and is destroyed at \(Date(timeIntervalSince1970: TimeInterval(response.dueAt.seconds)).formatted(.iso8601)) "
                    + "(`custos key destroy \(request)` or the server's sweep); `custos key cancel-destroy \(request)` undoes it until then"
            }
        }
    }

    struct Destroy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Carry out an approved destruction request (material gone; metadata and KCV stay).")
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Destroy the key version of request \(request)? This cannot be undone.", yes: yes)
            let request = request
            let response = try await remote.withAdmin { try await $0.destroyKey(.with { $0.requestID = request }) }
            try remote.print(response) { "destroyed: " + KeyCommand.row(response.key) }
        }
    }

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Complete or roll back rotations interrupted by a crash (local; `custos serve` does it at start).")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let done = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                try await context.keyring.reconcile()
            }
            print(done.isEmpty ? "nothing to reconcile" : done.map(KeyCommand.line).joined(separator: "\n"))
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Refuse every use of one version at once, on every instance (state kept; `key enable` undoes it).")
        @OptionGroup var remote: RemoteOptions
        @OptionGroup var key: KeyVersionOptions

        func run() async throws {
            let (id, wire, version) = try key.wire()
            let response = try await remote.withAdmin {
                try await $0.disableKey(.with { $0.tenantID = id; $0.purpose = wire; $0.version = version })
            }
            try remote.print(response) { "disabled: " + KeyCommand.row(response.key) }
        }
    }

    struct Enable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a disabled version usable again, exactly as its state allows.")
        @OptionGroup var remote: RemoteOptions
        @OptionGroup var key: KeyVersionOptions

        func run() async throws {
            let (id, wire, version) = try key.wire()
            let response = try await remote.withAdmin {
                try await $0.enableKey(.with { $0.tenantID = id; $0.purpose = wire; $0.version = version })
            }
            try remote.print(response) { "enabled: " + KeyCommand.row(response.key) }
        }
    }

    struct CancelDestruction: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cancel-destroy", abstract: "Cancel a destruction request before it is carried out (the version is usable again)."
        )
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String

        func run() async throws {
            let request = request
            let response = try await remote.withAdmin { try await $0.cancelKeyDestruction(.with { $0.requestID = request }) }
            try remote.print(response) { "cancelled \(request)" }
        }
    }
}

/// `--tenant T --purpose P --version N`: one key version, the tenant checked before anything is sent.
struct KeyVersionOptions: ParsableArguments {
    @Option(help: "Tenant id.") var tenant: String
    @Option(help: "Key purpose.") var purpose: KeyPurpose
    @Option(help: "Version.") var version: Int

    /// The request fields.
    func wire() throws -> (tenant: String, purpose: Custos_V1_KeyPurpose, version: UInt32) {
        (try tenantArgument(tenant), purpose.wire, try versionArgument(version))
    }
}

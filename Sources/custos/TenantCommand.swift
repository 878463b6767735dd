import ArgumentParser
import Custody
import CustosCommandLine
import CustosModel
import Foundation
import RPC
import Verification

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tenant",
        abstract: "Tenants: create, list, disable, set policy (over the Admin RPC).",
        subcommands: [Create.self, List.self, Disable.self, Policy.self, Offboard.self, ApproveOffboard.self, CompleteOffboard.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a tenant and version 1 of its keys.")
        @OptionGroup var remote: RemoteOptions
        @Option(help: "A handle for the tenant: lower-case letters, digits, '-'.") var label: String

        func run() async throws {
            let label = label
            let response = try await remote.withAdmin { try await $0.createTenant(.with { $0.label = label }) }
            try remote.print(response) { "created tenant \(response.tenant.label): \(response.tenant.tenantID)" }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tenants with their policies.")
        @OptionGroup var remote: RemoteOptions

        func run() async throws {
            let response = try await remote.withAdmin { try await $0.listTenants(.init()) }
            try remote.print(response) {
                response.tenants.map { tenant in
                    "\(tenant.tenantID)  \(pad(tenant.disabled ? "disabled" : "active", 9))\(pad(tenant.label, 24))"
                        + (tenant.policyRefused ? Policy.refusedSummary : Policy.summary(tenant.policy))
                }.joined(separator: "\n")
            }
        }
    }

    struct Disable: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a tenant: its API keys and certificates are refused.")
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Tenant id.") var tenant: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            let id = try tenantArgument(tenant)
            try confirm("Disable tenant \(id)?", yes: yes)
            let response = try await remote.withAdmin { try await $0.disableTenant(.with { $0.tenantID = id }) }
            try remote.print(response) { "disabled tenant \(id)" }
        }
    }

    struct Policy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a tenant's policy as it applies now (no options), or change its decision thresholds, retention, tokenization budget or biometric overlap: only the options given change."
        )
        @OptionGroup var remote: RemoteOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Scores at or above: green, as a fraction of matching positions of the tokens of the tenant's active biometric version, whose format the pair is recorded for (defaults: \(Policy.defaults(\.green)), FMR \(DecisionThresholds.greenFalseMatchRate); calibrate with `custos-bench eval --fmr`).") var green: Double?
        @Option(help: "Scores at or above (below green): amber; below: red (defaults: \(Policy.defaults(\.amber)), FMR \(DecisionThresholds.amberFalseMatchRate)).") var amber: Double?
        @Option(help: "Days without activity before a fingerprint is deleted, and after its end before a verification session is (default policy: 90).") var retentionDays: Int?
        @Option(help: "Tokenizations a minute (default policy: \(TenantPolicy.default.tokenizationsPerMinute)).") var tokenizationsPerMinute: Int?
        @Option(help: "Days the previous biometric key version keeps matching after a rotation, 0 to 365 (default policy: \(TenantPolicy.default.bioOverlapDays)).")
        var bioOverlapDays: Int?

        func run() async throws {
            let id = try tenantArgument(tenant)
            let (green, amber, days, budget) = (green, amber, retentionDays, tokenizationsPerMinute)
            var paths = [String]()
            if green != nil { paths.append("green_threshold") }
            if amber != nil { paths.append("amber_threshold") }
            // Checked here: a value outside a UInt32 would be clamped on the wire, silently.
            let retentionDays = try days.map { try wireUInt32($0, option: "--retention-days", in: TenantPolicy.retentionDaysRange) }
            let budgetPerMinute = try budget.map { try wireUInt32($0, option: "--tokenizations-per-minute", in: TenantPolicy.tokenizationsPerMinuteRange) }
            let overlap = try bioOverlapDays.map { try wireUInt32($0, option: "--bio-overlap-days", in: TenantPolicy.bioOverlapDaysRange) }
            if days != nil { paths.append("retention_days") }
            if budget != nil { paths.append("tokenization_budget_per_minute") }
            if overlap != nil { paths.append("bio_overlap_days") }
            guard !paths.isEmpty else {
                let response = try await remote.withAdmin { try await $0.getTenantPolicy(.with { $0.tenantID = id }) }
                try remote.print(response) { "policy of \(id): " + Self.summary(response.policy) }
                return
            }
            let mask = paths
            let response = try await remote.withAdmin {
                try await $0.setTenantPolicy(.with {
                    $0.tenantID = id
                    $0.policy = .with {
                        $0.greenThreshold = green ?? 0
                        $0.amberThreshold = amber ?? 0
                        $0.retentionDays = retentionDays ?? 0
                        $0.tokenizationBudgetPerMinute = budgetPerMinute ?? 0
                        if let overlap { $0.bioOverlapDays = overlap }
                    }
                    $0.updateMask = .with { $0.paths = mask }
                })
            }
            try remote.print(response) { "policy of \(id): " + Self.summary(response.policy) }
        }

        /// Each format's default, for the help text: `quaternary 0.5378, compact 0.1699, …`.
        static func defaults(_ threshold: KeyPath<DecisionThresholds, Double>) -> String {
            BiometricTokenFormat.allCases.reversed().map { "\($0.name) \(fraction(DecisionThresholds.default(for: $0)[keyPath: threshold]))" }
                .joined(separator: ", ")
        }

        static func fraction(_ value: Double) -> String { String(format: "%.4f", value) }

        /// A tenant whose policy row the database's writer changed (`policy_refused`).
        static let refusedSummary = "policy REFUSED: its row is not what the audit log records (data-plane calls answer DATA_LOSS); `custos tenant policy` with all five options repairs it"

        /// The thresholds that decide the active biometric version, with their format and whether
        /// they are the tenant's own; during an overlap, those of each older version too.
        static func summary(_ policy: Custos_V1_TenantPolicy) -> String {
            func pair(_ green: Double, _ amber: Double, _ format: Custos_V1_BiometricTokenFormat, own: Bool) -> String {
                "green ≥ \(fraction(green)), amber ≥ \(fraction(amber)) (\(UserFacingNames.format(format)) tokens, \(own ? "the tenant's own" : "defaults"))"
            }
            let active = policy.biometricVersions.first
            var text = pair(policy.greenThreshold, policy.amberThreshold, policy.thresholdsFormat, own: active?.tenantSet ?? false)
            for older in policy.biometricVersions.dropFirst() {
                text += "; bio v\(older.keyVersion) in overlap: " + pair(older.greenThreshold, older.amberThreshold, older.tokenFormat, own: older.tenantSet)
            }
            return text + ", retention \(policy.retentionDays) d, \(policy.tokenizationBudgetPerMinute)/min, bio overlap \(policy.bioOverlapDays) d"
        }
    }

    struct Offboard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "First officer: ask for a tenant's offboarding (crypto-shredding); a second officer approves within 24 h."
        )
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Tenant id.") var tenant: String
        @Option(help: "Days between approval and shredding, 7–30 (the tenant is disabled meanwhile).")
        var waitingDays = KeyDestructionApprovals.defaultWaitingDays

        func run() async throws {
            let id = try tenantArgument(tenant)
            let days = try waitingDaysArgument(waitingDays)
            let response = try await remote.withAdmin { try await $0.requestTenantOffboarding(.with { $0.tenantID = id; $0.waitingDays = days }) }
            try remote.print(response) {
                "offboarding request \(response.requestID): a different officer runs `custos tenant approve-offboard \(response.requestID)`"
            }
        }
    }

    struct ApproveOffboard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve-offboard", abstract: "Second officer: approve an offboarding; the tenant and its keys are disabled at once."
        )
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Disable the tenant of offboarding request \(request) now, and shred its keys and data when due?", yes: yes)
            let request = request
            let response = try await remote.withAdmin { try await $0.approveTenantOffboarding(.with { $0.requestID = request }) }
            try remote.print(response) {
                "approved \(request): tenant disabled; its keys and data are destroyed at \(Date(timeIntervalSince1970: TimeInterval(response.dueAt.seconds)).formatted(.iso8601)) "
                    + "(`custos tenant complete-offboard \(request)` or the server's sweep)"
            }
        }
    }

    struct CompleteOffboard: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "complete-offboard", abstract: "Carry out a due offboarding (or finish an interrupted one): keys destroyed, data rows deleted."
        )
        @OptionGroup var remote: RemoteOptions
        @Argument(help: "Request id.") var request: String
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Destroy every key and delete every data row of the tenant of request \(request)? This cannot be undone.", yes: yes)
            let request = request
            let response = try await remote.withAdmin { try await $0.completeTenantOffboarding(.with { $0.requestID = request }) }
            try remote.print(response) { "offboarded (\(request)): keys destroyed, data deleted; audit log and key metadata kept" }
        }
    }
}

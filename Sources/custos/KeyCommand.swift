public import ArgumentParser
import Custody
import CustosModel
import Foundation
import Storage

extension KeyPurpose: ExpressibleByArgument {}

struct KeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Tenant keys: list, rotate, retire, destroy, reconcile (local for now).",
        subcommands: [List.self, Rotate.self, Retire.self, Destroy.self, Reconcile.self]
    )

    struct KeyRow: Encodable {
        let purpose: String
        let version: Int
        let state: String
        let kcv: String
        let rootKEKVersion: Int
        let retiringUntil: Date?
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Versions of a tenant's keys, with check values (never key material).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Output format.") var output: OutputFormat = .table

        func run() async throws {
            let id = try tenantID(tenant)
            let versions = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.versions(id)
            }
            let rows = versions.map {
                KeyRow(purpose: $0.purpose.rawValue, version: $0.version, state: $0.state.rawValue,
                       kcv: $0.checkValue.map { String(format: "%02X", $0) }.joined(), rootKEKVersion: $0.rootKEKVersion,
                       retiringUntil: $0.retiringUntil)
            }
            switch output {
            case .json: print(try encodeJSON(rows))
            case .table:
                print("PURPOSE          VERSION  STATE      KCV     ROOT KEK")
                for row in rows {
                    print("\(row.purpose.padding(toLength: 16, withPad: " ", startingAt: 0)) v\(String(row.version).padding(toLength: 7, withPad: " ", startingAt: 0)) \(row.state.padding(toLength: 10, withPad: " ", startingAt: 0)) \(row.kcv)  v\(row.rootKEKVersion)")
                }
            }
        }
    }

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a new version active; the old one retires (after an overlap, if given).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Key purpose.") var purpose: KeyPurpose
        @Option(help: "Seconds the old version may still sign or encrypt.") var overlap = 0
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            if purpose == .bioSeed || purpose == .bioPRF {
                // One biometric version covers both keys: they rotate together.
                let version = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                    try await context.keyring.rotateBiometric(id, actor: actor)
                }
                print("bio-seed and bio-prf v\(version) are active; re-enrol subjects to renew their tokens")
                return
            }
            let record = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.rotate(id, purpose, overlap: .seconds(overlap), actor: actor)
            }
            print("\(purpose.rawValue) v\(record.version) is active (KCV \(record.checkValue.map { String(format: "%02X", $0) }.joined()))")
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a retiring version's overlap now.")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Key purpose.") var purpose: KeyPurpose
        @Option(help: "Version.") var version: Int
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.retire(id, purpose, version: version, actor: actor)
            }
            print("\(purpose.rawValue) v\(version) retired")
        }
    }

    struct Destroy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Destroy a retired version's material (metadata stays).")
        @OptionGroup var options: LocalOptions
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Key purpose.") var purpose: KeyPurpose
        @Option(help: "Version.") var version: Int
        @Option(help: "Seconds that must have passed since the version retired.") var waitingPeriod = 7 * 86_400
        @Flag(help: "Do not ask for confirmation.") var yes = false
        @Option(help: "Who does this (recorded in the audit log).") var actor = "officer"

        func run() async throws {
            let id = try tenantID(tenant)
            try confirm("Destroy \(purpose.rawValue) v\(version) of tenant \(id)? This cannot be undone.", yes: yes)
            try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.destroy(id, purpose, version: version, waitingPeriod: .seconds(waitingPeriod), actor: actor)
            }
            print("\(purpose.rawValue) v\(version) destroyed")
        }
    }

    struct Reconcile: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Complete or roll back rotations interrupted by a crash.")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let actions = try await CustodyContext.withContext(try options.loadConfiguration()) { context in
                try await context.keyring.reconcile()
            }
            if actions.isEmpty { print("no interrupted rotation") }
            for action in actions { print("\(action)") }
        }
    }
}

import ArgumentParser
import CustosCommandLine
import Composition
import Foundation
import Storage

struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db", abstract: "Database maintenance (local).", subcommands: [Migrate.self, SealRecords.self, DropWithdrawn.self]
    )

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Apply pending schema migrations as the owner role (local).")
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let configuration = try options.loadConfiguration()
            let runtimeOptions = CustosRuntime.Options.cli()
            let applied = try await CustosRuntime.withDatabase(configuration, role: .owner, options: runtimeOptions) { owner in
                try await Migrations.migrate(owner, serviceRole: configuration.serviceUser, logger: runtimeOptions.logger)
            }
            print(applied.isEmpty ? "schema is at version \(Migrations.latestVersion); nothing to do" : "applied migrations \(applied.map(String.init).joined(separator: ", "))")
        }
    }

    struct SealRecords: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "seal-records",
            abstract: "Give every template and session written before record MACs its MAC; from then on a record without one is refused (local).",
            discussion: """
                Run it once after an upgrade to schema 33, when every instance runs this build (an older instance still writes \
                templates and sessions without a MAC, which would then be refused). It trusts the rows it seals as Custos wrote \
                them: run it before the database's writer could have changed them, or after checking the database. Idempotent.
                """
        )
        @OptionGroup var options: LocalOptions
        @Flag(help: "Do not ask for confirmation (required without a terminal).") var yes = false

        func run() async throws {
            try confirm("Seal every template and session without a MAC, trusting it as written by Custos?", yes: yes)
            let sealed = try await CustosRuntime.run(try options.loadConfiguration(), options: .cli()) { context in
                try await context.keyring.sealUnsealedRecords(actor: "local:\(NSUserName())")
            }
            if sealed.alreadySealed {
                guard sealed.tenantsLeft == 0 else {
                    print("every record was sealed before: \(sealed.tenantsLeft) tenants have rows without a MAC, which only the database's writer can have written; none was sealed (they stay refused)")
                    throw ExitCode(1)
                }
                print("every record was sealed before; nothing to do")
                return
            }
            print("sealed \(sealed.templates) templates and \(sealed.sessions) sessions")
            if sealed.templatesDeleted > 0 {
                print("deleted \(sealed.templatesDeleted) templates put back without their MAC after Custos had removed them (only the database's writer can have done it)")
            }
            guard sealed.tenantsLeft == 0 else {
                print("\(sealed.tenantsLeft) tenants still have rows without a MAC (written or changed while this ran): the list is not marked; run it again")
                throw ExitCode(1)
            }
            print("a record without a MAC is refused from now on")
        }
    }

    struct DropWithdrawn: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drop-withdrawn",
            abstract: "Drop the withdrawn template MACs of destroyed biometric versions (local: the HSM and the owner role).",
            discussion: """
                Every template removed leaves its MAC on a list that keeps a copy of the row from being put back (schema 34). \
                Once a biometric version's bio-prf key is destroyed, as the HSM's list of key states records, no template of that \
                version can be compared again, and its entries guard nothing: this drops them. Run it after destroying old \
                biometric versions. Idempotent.
                """
        )
        @OptionGroup var options: LocalOptions

        func run() async throws {
            let configuration = try options.loadConfiguration()
            let runtimeOptions = CustosRuntime.Options.cli()
            let destroyed = try await CustosRuntime.run(configuration, options: runtimeOptions) { context in
                try await context.keyring.destroyedBiometricVersions()
            }
            let dropped = try await CustosRuntime.withDatabase(configuration, role: .owner, options: runtimeOptions) { owner in
                var dropped = 0
                for (tenant, versions) in destroyed {
                    dropped += try await owner.withTransaction(context: "drop withdrawn template MACs") { connection in
                        try await TemplateStore.dropWithdrawnMACs(tenant: tenant, keyVersions: versions, on: connection)
                    }
                }
                return dropped
            }
            print("dropped \(dropped) withdrawn template MACs of \(destroyed.values.map(\.count).reduce(0, +)) destroyed biometric versions")
        }
    }
}

import Composition
import Custody
import CustosModel
import Foundation
import HSMTestSupport
import Testing

/// A real `kill -9` of `custos serve` in the middle of a tenant's offboarding: the server's
/// sweep finds the approved offboarding due at start-up and stops itself at the named step
/// (`CUSTOS_CRASH_AT`); the next run finishes the job, the tenant's keys and data are gone, and
/// another tenant is untouched.
@Suite("Tenant offboarding survives kill -9 between its steps", .serialized)
struct OffboardingKillTests {
    @Test("killed after one key version's destruction, or after all of them: the next run completes it", arguments: [
        "offboarding.keyVersionDestroyed", "offboarding.keysDestroyed",
    ])
    func offboardingKilled(step: String) async throws {
        let verification = try await VerificationHarness.make("offboardkill")
        let harness = verification.custody
        let leaving = try await TenantOffboardingTests.populate(harness, label: "leaving", sealer: verification.sealer)
        let staying = try await TenantOffboardingTests.populate(harness, label: "staying", sealer: verification.sealer)
        // Requested and approved eight days ago (a 7-day wait), so it is due now.
        let past = TenantOffboarding(
            database: harness.service, keyring: harness.keyring, audit: harness.audit, now: { Date().addingTimeInterval(-8 * 86_400) }
        )
        let request = try await past.request(leaving.tenant, officer: "alice", waitingDays: 7)
        _ = try await past.approve(request.id, officer: "bob", certificateSerial: "b0b")

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory)
        let (server, _) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": step])
        try await ChildCustos.waitForExit(server, seconds: 90)
        #expect(ChildCustos.killedItself(server), "the server's sweep stopped at \(step)")

        let partial = try await harness.keyring.versions(leaving.tenant)
        #expect(partial.contains { $0.state == .destroyed }, "the killed run had begun")
        let offboarding = verification.graph.offboarding
        #expect(try await offboarding.get(request.id).completedAt == nil, "the kill came before the end")

        let run = try await offboarding.sweep(officer: "system")
        #expect(run.completed.map(\.id) == [request.id] && run.refused.isEmpty, "the next run finishes it")
        let versions = try await harness.keyring.versions(leaving.tenant)
        #expect(!versions.isEmpty && versions.allSatisfy { $0.state == .destroyed && $0.wrappedKey == nil })
        let dump = try harness.dump()
        #expect(!dump.contains(TenantOffboardingTests.hex(leaving.sealedName)) && !dump.contains(TenantOffboardingTests.hex(leaving.template)))
        #expect(dump.contains(TenantOffboardingTests.hex(staying.sealedName)), "the other tenant's data stays")
        #expect(try await verification.sealer.open(staying.sealedName, keyVersion: 1, tenant: staying.tenant, context: [7]).value == "Ada Lovelace")
        await harness.shutdown()
    }
}

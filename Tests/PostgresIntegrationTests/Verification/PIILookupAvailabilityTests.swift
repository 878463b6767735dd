import Composition
import Custody
import CustosModel
import Foundation
import Testing
import Verification

/// Lookups by external id compute the subject's reference under every live `pii` version. An
/// old version officers stopped (disabled, or scheduled for destruction once nothing is stored
/// under it — the very end of the pii migration) must not stop every lookup of the tenant.
@Suite("pii lookups while an old pii version is disabled or scheduled for destruction")
struct PIILookupAvailabilityTests {
    @Test("A scheduled or disabled old pii version with nothing under it does not stop session creation, export or erasure")
    func unusedStoppedVersionIsSkipped() async throws {
        let verification = try await VerificationHarness.make("attack_piisched")
        let keyring = verification.custody.keyring
        let approvals = KeyDestructionApprovals(
            database: verification.custody.service, keyring: keyring, audit: verification.custody.audit, now: verification.clock.now
        )
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        try await keyring.rotate(tenant, .pii, actor: "officer")  // v1 retired, nothing under it

        let request = try await approvals.request(tenant, .pii, version: 1, officer: "alice", waitingDays: 7)
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        let created = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-1"), name: nil, email: nil)
        #expect(created.subject.piiVersion == 2)
        _ = try await verification.rights.export(tenant: tenant, externalID: PersonalText("p-1"), actor: "officer")

        _ = try await approvals.cancel(request.id, officer: "carol")
        try await keyring.disable(tenant, .pii, version: 1, actor: "officer")
        #expect(try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-2"), name: nil, email: nil).subject.piiVersion == 2)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("p-1"), actor: "officer")
        await verification.custody.shutdown()
    }

    @Test("A disabled old pii version that still has references keeps refusing lookups: an erasure must not silently miss them")
    func usedStoppedVersionStillRefuses() async throws {
        let verification = try await VerificationHarness.make("attack_piiused")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-1"), name: nil, email: nil)
        try await keyring.rotate(tenant, .pii, actor: "officer")
        try await keyring.disable(tenant, .pii, version: 1, actor: "officer")
        var refused = false
        do {
            _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("p-1"), actor: "officer")
        } catch CustodyError.keyDisabled(tenant, .pii, 1) {
            refused = true
        }
        #expect(refused, "an erasure reported success while a session under the disabled version was out of its reach")
        await verification.custody.shutdown()
    }
}

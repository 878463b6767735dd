import Custody
import CustosModel
import Foundation
import Testing

@Suite("Key destruction needs a second, different officer, before the request expires")
struct KeyDestructionApprovalTests {
    @Test("Requester cannot approve; unapproved or expired requests are not carried out; an approved one runs once")
    func twoOfficers() async throws {
        let harness = try await CustodyHarness.make("approvals")
        let clock = TestClock()
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id

        await #expect(throws: CustodyError.self, "an active version cannot be put up for destruction") {
            _ = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        }
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        await #expect(throws: DestructionApprovalError.notApproved(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        await #expect(throws: DestructionApprovalError.approverIsRequester(request.id)) {
            _ = try await approvals.approve(request.id, officer: "alice", certificateSerial: "a11ce")
        }
        let approved = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        #expect(approved.approvedBy == "bob" && approved.approvedAt != nil)
        await #expect(throws: DestructionApprovalError.alreadyApproved(request.id)) { _ = try await approvals.approve(request.id, officer: "carol", certificateSerial: "ca201") }

        let done = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        #expect(done.executedAt != nil)
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 }?.state == .destroyed)
        await #expect(throws: DestructionApprovalError.alreadyExecuted(request.id)) {
            _ = try await approvals.execute(request.id, officer: "bob", waitingPeriod: .zero)
        }

        // An approval that arrives after the request expired does not count.
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let late = try await approvals.request(tenant, .data, version: 2, officer: "alice")
        clock.advance(hours: 24.5)
        await #expect(throws: DestructionApprovalError.expired(late.id)) { _ = try await approvals.approve(late.id, officer: "bob", certificateSerial: "b0b") }
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 2 }?.state == .retired)
        let nobody = UUID()
        await #expect(throws: DestructionApprovalError.unknown(nobody)) { _ = try await approvals.approve(nobody, officer: "bob", certificateSerial: "b0b") }
        await harness.shutdown()
    }
}

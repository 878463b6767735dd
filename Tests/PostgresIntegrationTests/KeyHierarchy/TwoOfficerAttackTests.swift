@testable import Custody
import CustosModel
import Foundation
import Storage
import Testing

/// One officer alone, with write access to the database, doing what needs two.
@Suite("Two-officer attacks")
struct TwoOfficerAttackTests {
    @Test("a request to end a biometric overlap written into the database does not let one officer end it alone")
    func forgedOverlapEndRequestRefused() async throws {
        let harness = try await CustodyHarness.make("forgedoverlapend")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "officer")
        let approvals = BiometricOverlapEndApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        // Mallory holds an officer certificate and the database; she names Bob as the requester
        // (the service role may insert requests).
        let id = UUID()
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO overlap_end_requests (id, tenant_id, version, requested_by, requested_at, expires_at)
            VALUES (\(id), \(tenant.rawValue)::uuid, 1, 'bob', date_trunc('second', now()), date_trunc('second', now()) + interval '1 hour')
            """)
        await #expect(throws: OverlapEndApprovalError.self) {
            _ = try await approvals.approve(id, officer: "mallory", certificateSerial: "0a")
        }
        let seed = try await harness.keyring.versions(tenant).first { $0.purpose == .bioSeed && $0.version == 1 }
        #expect(seed?.state == .retiring, "the overlap is still open: no second officer asked for its end")
        await harness.shutdown()
    }
}

@testable import Custody
import CustosModel
import Foundation
import Storage
import Testing

/// A database writer with any backup puts an older, MAC-valid copy of a `key_versions` row back.
/// Destructions are anchored in the HSM; the flags that stop a version's use are not.
@Suite("Row replay attacks")
struct RowReplayAttackTests {
    @Test("a disabled version's row replayed from before the disable is refused")
    func disabledRowReplayed() async throws {
        let harness = try await CustodyHarness.make("replaydisabled")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let before = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 })
        try await harness.keyring.disable(tenant, .data, version: 1, actor: "officer")
        // The backup's row: disabled_at NULL and the MAC that went with it.
        try await harness.ownerSQL(tenant: tenant, """
            UPDATE key_versions SET disabled_at = NULL, row_mac = \(Data(before.rowMAC)) WHERE purpose = 'data' AND version = 1
            """)
        let keyring = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        await withKnownIssue("disabled_at is covered by the row MAC only, and an older row's MAC is still valid") {
            await #expect(throws: CustodyError.self) { _ = try await keyring.key(tenant, .data, version: 1) }
        }
        await harness.shutdown()
    }
}

import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import Testing

/// Tenant keys through a pool whose key cache holds fewer keys than the tenants use: every key
/// is unwrapped for real from its row, evicted, and unwrapped again on its next use.
@Suite("Tenant keys under a bounded key cache")
struct TenantKeyEvictionTests {
    @Test("Eight tenant keys through a cache of three: identical results after re-unwrapping, never more than three session objects, concurrent use never fails")
    func evictedTenantKeysComputeTheSame() async throws {
        let harness = try await CustodyHarness.make("evict", maxCachedKeys: 3)
        var keys = [HSMKey]()
        for index in 0..<4 {
            let tenant = try await harness.keyring.createTenant(label: "tenant-\(index)", actor: "officer")
            for purpose in [KeyPurpose.pii, .apiKeyPepper] { keys.append(try await harness.keyring.key(tenant.id, purpose).key) }
        }
        let data = Array("external-id-1".utf8)
        var first = [[UInt8]]()
        for key in keys { first.append(try await harness.pool.hmacSHA256(key: key, data: data)) }
        #expect(Set(first).count == keys.count, "eight distinct keys")
        #expect(harness.pool.statistics.keyEvictions >= 5)

        // Several tasks at once, each cycling through all eight keys in its own order.
        let all = keys, expected = first, pool = harness.pool
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var wrong = 0
                    for round in 0..<6 {
                        let index = (task + round * 3) % all.count
                        if try await pool.hmacSHA256(key: all[index], data: data) != expected[index] { wrong += 1 }
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
        let sessionObjects = try await harness.pool.withSession { session in
            try session.pkcs11.findObjects([.token(false)], limit: 1000).count
        }
        #expect(sessionObjects <= 3)
        #expect(harness.pool.statistics.cachedSessionObjects <= 3)
        await harness.shutdown()
    }
}

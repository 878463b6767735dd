@testable import Ceremony
import Custody
import CustosModel
import HSM
import PKCS11
import Testing

/// A root-KEK rotation's re-wrap may run on a replica token (the call moves there when the first
/// token fails), so the rewrap KEKs it rebuilt from the custodians' shares may live on any token.
@Suite("Root-KEK rotation on replicated tokens", .serialized)
struct ReplicatedRewrapTests {
    @Test("The rewrap KEKs rebuilt from shares are destroyed on every token when the rotation ends, the replica's too")
    func rewrapKEKsLeaveEveryToken() async throws {
        let replicated = try await ReplicaTokenAttackTests.Replicated.make("reprewrap")
        let pool = replicated.pool
        let sources = try await RewrapSources.make(
            pool: pool, inventory: try await RootKeyInventory.read(from: pool), shareSets: [Array(replicated.harness.sharePaths.prefix(2))]
        )
        let rewrapKEK = try #require(sources.unwrappingKey(.data, 1))
        func unwrapCapableSessionObjects(_ index: Int) async throws -> Int {
            try await pool.tokenPools[index].withPersistentSession { try $0.findObjects([.class(.secretKey), .token(false), .unwrap(true)]).count }
        }
        // Made where a re-wrap used it: on each token.
        // Each token's own session: the first token's pool would route `withSession` to either.
        for token in pool.tokenPools { _ = try await token.withTokenSession(.wrap) { session in try session.handle(for: rewrapKEK) } }
        #expect(try await unwrapCapableSessionObjects(0) == 1)
        #expect(try await unwrapCapableSessionObjects(1) == 1)
        await sources.destroy(on: pool)
        #expect(try await unwrapCapableSessionObjects(0) == 0)
        #expect(try await unwrapCapableSessionObjects(1) == 0, "the replica's rewrap KEK is gone too")
        await replicated.shutdown()
    }
}

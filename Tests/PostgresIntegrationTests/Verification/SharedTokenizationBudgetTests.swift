import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing
import Tokenization

@Suite("Tokenization budget shared across instances and restarts")
struct SharedTokenizationBudgetTests {
    /// Spends `limiter`'s budget for `tenant` until it is refused. - Returns: calls allowed.
    static func spend(_ limiter: TokenizationRateLimiter, _ tenant: TenantID, atMost: Int = 200) async throws -> Int {
        for allowed in 0..<atMost {
            do {
                try await limiter.acquire(tenant)
            } catch let error as TokenizationError {
                #expect(error == .rateLimited(tenant))
                return allowed
            }
        }
        return atMost
    }

    @Test("The database's writer refilling the shared row gets an instance no more than its own bucket holds (helper-85)")
    func refilledRowIgnored() async throws {
        let custody = try await CustodyHarness.make("budgetrefill")
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let budget = TokenizationBudget(perSecond: 1e-6, burst: 10)
        let limiter = TokenizationRateLimiter(database: custody.service, defaultBudget: budget, audit: custody.audit, leaseLifetime: .seconds(3_600))
        #expect(try await Self.spend(limiter, tenant) == 10, "the burst")
        var more = 0
        for _ in 0..<5 {
            // As the service role: the shared bucket full again.
            _ = try await custody.service.withTenant(tenant, context: "test: database writer") { connection in
                try await connection.query("UPDATE tokenization_budgets SET tokens = 1000000", logger: Database.quiet)
            }
            // A refusal stands locally for up to a second before the row is asked again.
            try await Task.sleep(for: .milliseconds(1_100))
            more += try await Self.spend(limiter, tenant)
        }
        #expect(more == 0, "\(more) more tokenizations from a refilled row")
        await custody.shutdown()
    }

    @Test("Two instances spend one budget together, in blocks; a restarted instance gets no fresh budget; one audit entry")
    func sharedAndDurable() async throws {
        let custody = try await CustodyHarness.make("budgetshared")
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        // 40 at once, refilling one token per ~11 days: the test sees the burst only.
        let budget = TokenizationBudget(perSecond: 1e-6, burst: 40)
        let second = try custody.secondServiceDatabase()
        let restarted = try custody.secondServiceDatabase()
        func limiter(_ database: Database) -> TokenizationRateLimiter {
            let limiter = TokenizationRateLimiter(database: database, defaultBudget: budget, audit: custody.audit, leaseLifetime: .seconds(3_600))
            return limiter
        }
        let a = limiter(custody.service)
        let b = limiter(second)
        #expect(a.blockSize(budget) == 4, "a tenth of the burst per lease")

        try await a.acquire(tenant)
        // One lease of a block: the shared row gave 4 tokens, not 1 (one transaction per block).
        let left = try await custody.owner.withTenant(tenant, context: "read budget") { connection in
            try await connection.query("SELECT tokens FROM tokenization_budgets", logger: Database.quiet).collect().first!.decode(Double.self)
        }
        #expect(abs(left - 36) < 0.01, "left \(left)")

        let spentByB = try await Self.spend(b, tenant)
        let spentByA = try await Self.spend(a, tenant)
        #expect(spentByB == 36, "B spends what A did not lease")
        #expect(1 + spentByA + spentByB == 40, "together exactly the burst, not a burst each")

        let afterRestart = limiter(restarted)
        #expect(try await Self.spend(afterRestart, tenant) == 0, "a new instance (a restart) does not reset the budget")

        let entries = try await custody.owner.withTransaction(context: "read audit") { connection in
            try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
        }.filter { $0.action == "tokenization.rate_limited" }
        #expect(entries.count == 1, "refusals are audited once a minute per tenant across instances")
        #expect(entries.first?.tenant == tenant)

        // Another tenant has its own bucket.
        let other = try await custody.keyring.createTenant(label: "globex", actor: "officer").id
        try await b.acquire(other)
        await second.shutdown()
        await restarted.shutdown()
        await custody.shutdown()
    }
}

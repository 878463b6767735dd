import HSM
import HSMTestSupport
import Testing

@Suite("Self-test")
struct SelfTestTests {
    @Test("Every known-answer test passes on SoftHSM and leaves no object behind")
    func selfTestPasses() async throws {
        let token = try TestToken.make("selftest")
        let pool = try await startedPool(token)
        let results = await SelfTest.run(on: pool)
        #expect(results.count == 12)
        #expect(SelfTest.custodyBlockers(results).isEmpty, "SoftHSM enforces unwrap templates, wraps per RFC 5649, shows KCVs")
        for result in results { #expect(result.passed, "\(result.name): \(result.detail)") }
        let leftovers = try await pool.withPersistentSession { session in try session.findObjects([]).count }
        #expect(leftovers == 0)
        await pool.shutdown()
    }
}

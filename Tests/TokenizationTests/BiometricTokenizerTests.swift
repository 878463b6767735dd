import CustosModel
import HSM
import HSMTestSupport
import SecureMemory
import Testing
import Tokenization
import TokenizationEvaluation

/// The whole pipeline on a real SoftHSM token: seed HMAC and PRF in the HSM, with the fixed
/// evaluation keys (no database needed).
@Suite("Biometric tokenizer (HSM)")
struct BiometricTokenizerTests {
    static let tenant = TenantID("11111111-2222-4333-8444-555555555555")!

    private func tokenizer(_ kind: IndexOfMaxHashing.ProjectionKind = .structured) async throws -> (SessionPool, BiometricTokenizer) {
        let token = try TestToken.make("tokenizer")
        let pool = try SessionPool(configuration: token.configuration(), logger: LogCapture().logger)
        try await pool.start()
        return (pool, BiometricTokenizer(pool: pool, keys: EvaluationKeys(versions: [1, 2]), kind: kind))
    }

    private func vector(seed: UInt64, dimension: Int = 512) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<dimension).map { _ in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(Int64(bitPattern: state % 2001) - 1000) / 1000
        }
    }

    private func noisy(_ values: [Float], amount: Float, seed: UInt64) -> [Float] {
        let noise = vector(seed: seed, dimension: values.count)
        return zip(values, noise).map { $0 + amount * $1 }
    }

    @Test("Same embedding twice → the same token; small noise → a high score; unrelated → about 1/4 + 3/4 · 1/4")
    func tokenProperties() async throws {
        let (pool, tokenizer) = try await tokenizer()
        let face = vector(seed: 1)
        let first = try await tokenizer.tokenize(try FeatureVector(face), tenant: Self.tenant)
        let again = try await tokenizer.tokenize(try FeatureVector(face), tenant: Self.tenant)
        #expect(first == again)
        #expect(first.keyVersion == 2, "the newest fixed version is the default")
        let close = try await tokenizer.tokenize(try FeatureVector(noisy(face, amount: 0.15, seed: 2)), tenant: Self.tenant)
        #expect(first.score(against: close) > 0.6)
        var unrelatedScores = [Double]()
        for seed in 10..<20 as Range<UInt64> {
            let other = try await tokenizer.tokenize(try FeatureVector(vector(seed: seed)), tenant: Self.tenant)
            unrelatedScores.append(first.score(against: other))
        }
        let mean = unrelatedScores.reduce(0, +) / Double(unrelatedScores.count)
        // Quaternary tokens (the default): symbols agree at 1 in 4 for unrelated faces, and two
        // different symbols collide in 2 bits at 1 in 4 of the rest: 0.25 + 0.75 · 0.25 ≈ 0.44.
        #expect(first.format == .quaternary)
        #expect(mean > 0.40 && mean < 0.48, "mean unrelated score \(mean)")
        await pool.shutdown()
    }

    @Test("Other key versions and other tenants give unlinkable tokens (scores like impostors or lower)")
    func unlinkable() async throws {
        let (pool, tokenizer) = try await tokenizer()
        let face = try FeatureVector(vector(seed: 7))
        let v1 = try await tokenizer.tokenize(face, tenant: Self.tenant, version: 1)
        let v2 = try await tokenizer.tokenize(face, tenant: Self.tenant, version: 2)
        #expect(v1.keyVersion == 1 && v2.keyVersion == 2)
        #expect(v1.score(against: v2) == 0, "different versions never compare")
        // Quaternary values (2 bits) agree by chance at 1 position in 4: about 1,024 of 4,096
        // (σ ≈ 28), where one face under one key agrees everywhere; 1,163 is chance + 5σ.
        #expect(v1.format == .quaternary && v1.matchingPositions(with: v2) < 1_163, "and their values are unrelated")
        let otherTenant = TenantID("99999999-2222-4333-8444-555555555555")!
        let elsewhere = try await tokenizer.tokenize(face, tenant: otherTenant, version: 1)
        #expect(v1.matchingPositions(with: elsewhere) < 1_163, "the same face under another tenant does not link")
        await pool.shutdown()
    }

    @Test("Invalid inputs each give their own error")
    func invalidInputs() {
        #expect(throws: FeatureVectorError.wrongDimension(100)) { _ = try FeatureVector([Float](repeating: 1, count: 100)) }
        var nan = vector(seed: 3)
        nan[17] = .nan
        #expect(throws: FeatureVectorError.notFinite(index: 17)) { _ = try FeatureVector(nan) }
        var infinite = vector(seed: 3)
        infinite[3] = -.infinity
        #expect(throws: FeatureVectorError.notFinite(index: 3)) { _ = try FeatureVector(infinite) }
        #expect(throws: FeatureVectorError.zeroNorm) { _ = try FeatureVector([Float](repeating: 0, count: 256)) }
    }

    @Test("On a generated set (fixed seed and keys): raw cosine errs, protected EER ≤ raw + 0.0025, D↔sys ≤ 0.05")
    func evaluationTargets() async throws {
        let (pool, _) = try await tokenizer()
        let set = SyntheticEmbeddings(configuration: .init(identities: 60, samplesPerIdentity: 8, dimension: 512, seed: 42))
        let report = try await ProtectedEvaluation.run(set.embeddings, pool: pool, kind: .structured)
        #expect(report.raw_eer > 0, "a set on which raw cosine never errs proves nothing")
        #expect(report.protected_eer <= report.raw_eer + 0.0025, "raw \(report.raw_eer) protected \(report.protected_eer)")
        #expect(report.dsys <= 0.05)
        #expect(report.renewability_max < report.protected_impostor_mean, "old vs new token of a face scores below impostors")
        #expect(report.samples == 480 && report.identities == 60)
        await pool.shutdown()
    }

    @Test("The budget's bucket: bursts, refills per second, never past the burst, nothing for a clock that went back")
    func tokenBucket() {
        let budget = TokenizationBudget(perSecond: 1, burst: 3)
        var bucket = TokenBucket(tokens: budget.burst, at: 100)
        #expect(bucket.take(upTo: 2) == 2)
        #expect(bucket.take(upTo: 2) == 1, "the burst is spent")
        #expect(bucket.take(upTo: 1) == 0)
        #expect(bucket.secondsUntilNextToken(budget) == 1)
        bucket.refill(to: 101.5, budget: budget)
        #expect(bucket.take(upTo: 5) == 1, "one and a half earned: one whole token")
        bucket.refill(to: 50, budget: budget)
        #expect(bucket.take(upTo: 1) == 0 && bucket.at == 101.5, "a clock that went backwards earns nothing")
        bucket.refill(to: 10_000, budget: budget)
        #expect(bucket.tokens == 3, "never past the burst")
        #expect(TokenizationBudget(perMinute: 12) == TokenizationBudget(perSecond: 0.2, burst: 1))
        #expect(TokenizationBudget(perMinute: 6_000).burst == 500)
    }
}


import Synchronization

@Suite("Process hygiene")
struct ProcessHygieneTests {
    @Test("Core dumps are off and the process is not dumpable after lockDown()")
    func lockDown() {
        let state = ProcessHygiene.lockDown()
        #expect(state.coreLimitZero)
        #expect(!state.dumpable)
        #expect(ProcessHygiene.current == state)
    }
}

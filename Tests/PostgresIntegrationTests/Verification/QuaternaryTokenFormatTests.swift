import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing
import Tokenization
@testable import Verification

/// The quaternary token format (4,096 positions of 2 bits, 1 KiB like compact) reaches compact
/// tenants through a biometric rotation (DESIGN §5): the overlap verifies and identifies across
/// both formats, each decided by its own thresholds, and a GREEN match moves the subject to the
/// quaternary version. Real SoftHSM and PostgreSQL throughout.
@Suite("Quaternary token format and its migration from compact")
struct QuaternaryTokenFormatTests {
    typealias Overlap = BiometricOverlapTests
    typealias Formats = CompactTokenFormatTests

    /// A tenant whose `bio` v1 is compact (made before the quaternary format), and v2 quaternary.
    static func compactTenantRotated(_ verification: VerificationHarness, enrol: [(String, Double)]) async throws -> (TenantID, [String]) {
        let keyring = verification.custody.keyring
        let tenant = try await Formats.keyring(verification, making: .compact).createTenant(label: "legacy", actor: "officer").id
        #expect(try await keyring.biometricTokenFormat(tenant, version: 1) == .compact)
        var subjects = [String]()
        for (externalID, seed) in enrol { subjects.append(try await Overlap.enrol(verification, tenant, externalID, seed)) }
        #expect(try await keyring.rotateBiometric(tenant, actor: "officer") == 2)
        #expect(try await keyring.biometricTokenFormat(tenant, version: 2) == .quaternary, "new versions are quaternary by default")
        #expect(try await keyring.biometricTokenFormat(tenant, version: 1) == .compact, "an existing version keeps its format")
        return (tenant, subjects)
    }

    @Test("Compact templates verify during the overlap of a rotation to the quaternary format and move to it on GREEN")
    func compactTemplatesMigrate() async throws {
        let verification = try await VerificationHarness.make("quatmigrate")
        let (tenant, _) = try await Self.compactTenantRotated(verification, enrol: [("mover", 0.61), ("stayer", 1.37)])
        #expect(try await Formats.storedLengths(verification, tenant) == [[1, 1024], [1, 1024]])

        let (decision, compared) = try await Overlap.verify(verification, tenant, "mover", Overlap.probe(0.61))
        #expect(decision.color == .green)
        #expect(compared == 1, "compared under v1, with the probe tokenized in v1's compact format")
        // Both 1 KiB: only the version (and its recorded format) tells them apart.
        #expect(try await Formats.storedLengths(verification, tenant) == [[1, 1024], [2, 1024]], "moved to a template of v2")
        let (again, againVersion) = try await Overlap.verify(verification, tenant, "mover", Overlap.probe(0.61))
        #expect(again.color == .green && againVersion == 2, "now compared in the quaternary format")
        let (stayer, stayerVersion) = try await Overlap.verify(verification, tenant, "stayer", Overlap.probe(1.37))
        #expect(stayer.color == .green && stayerVersion == 1)
        #expect(verification.core.biometricMigrations == 2)
        // An unrelated face stays RED under either format (no migration).
        let (red, _) = try await Overlap.verify(verification, tenant, "stayer", Overlap.face(2.9))
        #expect(red.color == .red)
        await verification.custody.shutdown()
    }

    @Test("Identify across a compact and a quaternary version finds each subject once, GREEN under its own format")
    func identifyAcrossFormats() async throws {
        let verification = try await VerificationHarness.make("quatidentify")
        let (tenant, subjects) = try await Self.compactTenantRotated(verification, enrol: [("old-subject", 0.61)])
        let new = try await Overlap.enrol(verification, tenant, "new-subject", 1.37)
        #expect(try await Formats.storedLengths(verification, tenant) == [[1, 1024], [2, 1024]])
        for (seed, expected) in [(0.61, subjects[0]), (1.37, new)] {
            let session = try await verification.consentedSession(tenant, "searcher")
            let found = try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Overlap.probe(seed)), top: 5)
            #expect(found.first?.subject == expected)
            #expect(found.first?.decision.color == .green)
            #expect(Set(found.map(\.subject)).count == found.count, "no subject twice")
            // The other subject is an impostor in either format: never GREEN.
            #expect(found.dropFirst().allSatisfy { $0.decision.color != .green })
        }
        await verification.custody.shutdown()
    }

    @Test("A tenant's thresholds decide only the format they were set for; a pair below quaternary chance is refused")
    func thresholdsPerFormat() async throws {
        let verification = try await VerificationHarness.make("quatthresholds")
        let (tenant, _) = try await Self.compactTenantRotated(verification, enrol: [])
        // v2 (quaternary) is active: a compact-scale pair set now is a mistake, since unrelated
        // faces score about 0.44 on quaternary tokens.
        await #expect(throws: VerificationError.invalidArgument(field: "amber", reason: "above 0.4375, the score of unrelated faces on the tenant's quaternary tokens")) {
            _ = try await verification.policies.update(TenantPolicy.Changes(green: 0.3, amber: 0.2), for: tenant, actor: "officer")
        }
        let set = try await verification.policies.update(TenantPolicy.Changes(green: 0.7, amber: 0.6), for: tenant, actor: "officer")
        #expect(set.thresholdsFormat == .quaternary)
        #expect(set.thresholds(for: .quaternary) == DecisionThresholds(green: 0.7, amber: 0.6))
        #expect(set.thresholds(for: .compact) == DecisionThresholds.default(for: .compact), "the compact version keeps its defaults")
        // Read back from the database (no cache) the same.
        let reread = try await TenantPolicies(database: verification.custody.service, audit: nil, cacheLifetime: .zero).policy(tenant)
        #expect(reread.thresholdsFormat == .quaternary && reread.thresholds(for: .quaternary).green == 0.7)
        // Changing only the budget keeps the format the thresholds were set for.
        let budget = try await verification.policies.update(TenantPolicy.Changes(tokenizationsPerMinute: 500), for: tenant, actor: "officer")
        #expect(budget.thresholdsFormat == .quaternary)

        // A compact tenant's pair is recorded for compact, and does not reach a quaternary version.
        let compactTenant = try await Formats.keyring(verification, making: .compact).createTenant(label: "compact", actor: "officer").id
        let compact = try await verification.policies.update(TenantPolicy.Changes(green: 0.3, amber: 0.2), for: compactTenant, actor: "officer")
        #expect(compact.thresholdsFormat == .compact)
        #expect(compact.thresholds(for: .wide) == DecisionThresholds(green: 0.3, amber: 0.2), "wide shares compact's scale")
        #expect(compact.thresholds(for: .quaternary) == DecisionThresholds.default(for: .quaternary))
        await verification.custody.shutdown()
    }
}

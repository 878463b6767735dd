import Composition
import Custody
import CustosModel
import Foundation
import Testing
import Tokenization
import Verification

/// Silent migration re-enrols a subject from the probe of a GREEN match under the old biometric
/// version. GREEN is decided by the tenant's thresholds, which live in `tenant_policies`: were the
/// migration to follow them, a database writer who lowered them for a moment would turn an
/// impostor's verification into the subject's new enrolment, outliving the restored thresholds.
/// Two defences: the migration needs a fixed floor (`VerificationService.migrationFloor(for:)`),
/// and (session 22) a policy row that is not what its newest audited change recorded is refused
/// (`PolicyAttestationAttackTests`).
@Suite("Silent migration and thresholds written in the database")
struct MigrationThresholdAttackTests {
    @Test("An impostor's GREEN under lowered thresholds during the overlap does not replace the subject's enrolment for good")
    func loweredThresholdsDoNotMigrateAnImpostor() async throws {
        let verification = try await VerificationHarness.make("attack_impostor")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(PIIReferenceMigrationTests.face)
        let impostor = try FeatureVector(PIIReferenceMigrationTests.otherFace)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: face)
        try await keyring.rotateBiometric(tenant, actor: "officer")  // v1 matches for the tenant's overlap

        try await verification.custody.ownerSQL(tenant: tenant, """
            INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute, thresholds_format)
            VALUES (\(tenant.rawValue)::uuid, 0.02, 0.01, 90, 6000, \(BiometricTokenFormat.default.rawValue)::smallint)
            ON CONFLICT (tenant_id) DO UPDATE SET green_threshold = 0.02, amber_threshold = 0.01, thresholds_format = EXCLUDED.thresholds_format
            """)
        let session = try await verification.consentedSession(tenant, "p-1")
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant), "the lowered thresholds are refused, not applied") {
            try await verification.flow.verify(tenant: tenant, session: session, features: impostor)
        }
        try await verification.custody.ownerSQL(tenant: tenant, "DELETE FROM tenant_policies WHERE tenant_id = \(tenant.rawValue)::uuid")

        // Thresholds restored: the real subject must still be the one enrolled.
        let real = try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: face)
        let again = try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: impostor)
        // Nothing was compared under the lowered thresholds, so nothing migrated.
        #expect(real.color == .green, "the subject's own face no longer verifies: the impostor's replaced it")
        #expect(again.color != .green, "the impostor stays enrolled after the thresholds were restored")
        await verification.custody.shutdown()
    }
}

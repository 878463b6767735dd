import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing
import Tokenization
import Verification

/// A 1 KiB token format reaches existing tenants through a biometric rotation (DESIGN §5): a
/// tenant whose `bio` v1 is wide keeps its 4 KiB templates, v2 has the default format (compact
/// when this suite was written, quaternary now: `QuaternaryTokenFormatTests` moves compact
/// tenants on), the overlap verifies and identifies across both, and a GREEN match moves the
/// subject to a 1 KiB template. Real SoftHSM and PostgreSQL throughout.
@Suite("Compact token format and its migration")
struct CompactTokenFormatTests {
    typealias Overlap = BiometricOverlapTests

    /// A keyring over the harness's token and database whose new `bio` versions are wide: how
    /// every tenant made before the compact format looks.
    static func wideKeyring(_ verification: VerificationHarness) -> TenantKeyring {
        keyring(verification, making: .wide)
    }

    /// A keyring over the harness's token and database whose new `bio` versions have `format`.
    static func keyring(_ verification: VerificationHarness, making format: BiometricTokenFormat) -> TenantKeyring {
        let custody = verification.custody
        return TenantKeyring(
            pool: custody.pool, database: custody.service, rootKeys: custody.keyring.rootKeys, audit: custody.audit,
            logger: custody.logs.logger, biometricTokenFormat: format
        )
    }

    /// (key version, stored bytes) of the tenant's templates, read as the schema owner.
    static func storedLengths(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> [[Int]] {
        try await verification.custody.owner.withTransaction(context: "read templates") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            var rows = [[Int]]()
            let query: PostgresQuery = "SELECT key_version, length(token)::int FROM templates ORDER BY key_version, length(token)"
            for try await (version, length) in try await connection.query(query, logger: Database.quiet).decode((Int, Int).self) {
                rows.append([version, length])
            }
            return rows
        }
    }

    @Test("Wide templates verify during the overlap of a rotation to the compact format and move to it on GREEN")
    func wideTemplatesMigrate() async throws {
        let verification = try await VerificationHarness.make("compactmigrate")
        let keyring = verification.custody.keyring
        #expect(keyring.biometricTokenFormat == .default, "new versions have the default format")
        let tenant = try await Self.wideKeyring(verification).createTenant(label: "legacy", actor: "officer").id
        #expect(try await keyring.biometricTokenFormat(tenant, version: 1) == .wide)
        _ = try await Overlap.enrol(verification, tenant, "mover", 0.61)
        _ = try await Overlap.enrol(verification, tenant, "stayer", 1.37)
        #expect(try await Self.storedLengths(verification, tenant) == [[1, 4096], [1, 4096]])

        #expect(try await keyring.rotateBiometric(tenant, actor: "officer") == 2)
        #expect(try await keyring.biometricTokenFormat(tenant, version: 2) == .default)
        #expect(try await keyring.biometricTokenFormat(tenant, version: 1) == .wide, "an existing version keeps its format")

        let (decision, compared) = try await Overlap.verify(verification, tenant, "mover", Overlap.probe(0.61))
        #expect(decision.color == .green)
        #expect(compared == 1, "compared under v1, with the probe tokenized in v1's wide format")
        #expect(try await Self.storedLengths(verification, tenant) == [[1, 4096], [2, 1024]], "moved to a 1 KiB template of v2")
        let (again, againVersion) = try await Overlap.verify(verification, tenant, "mover", Overlap.probe(0.61))
        #expect(again.color == .green && againVersion == 2)
        let (stayer, stayerVersion) = try await Overlap.verify(verification, tenant, "stayer", Overlap.probe(1.37))
        #expect(stayer.color == .green && stayerVersion == 1)
        await verification.custody.shutdown()
    }

    @Test("Identify across a wide and a compact version finds each subject once")
    func identifyAcrossFormats() async throws {
        let verification = try await VerificationHarness.make("compactidentify")
        let keyring = verification.custody.keyring
        let tenant = try await Self.wideKeyring(verification).createTenant(label: "legacy", actor: "officer").id
        let old = try await Overlap.enrol(verification, tenant, "old-subject", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let new = try await Overlap.enrol(verification, tenant, "new-subject", 1.37)
        // A subject with a template in each format (as if caught mid-migration by a stale gallery).
        let both = SubjectReference(value: "v1:" + String(repeating: "ab", count: 32), piiVersion: 1)
        let bothFace = try FeatureVector(Overlap.face(2.3))
        try await verification.core.enrol(tenant: tenant, subject: both, token: try await verification.tokenizer.tokenize(bothFace, tenant: tenant, version: 1))
        try await verification.core.enrol(tenant: tenant, subject: both, token: try await verification.tokenizer.tokenize(bothFace, tenant: tenant))
        #expect(try await Self.storedLengths(verification, tenant) == [[1, 4096], [1, 4096], [2, 1024], [2, 1024]])

        for (seed, expected) in [(0.61, old), (1.37, new), (2.3, both.value)] {
            let session = try await verification.consentedSession(tenant, "searcher")
            let found = try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Overlap.probe(seed)), top: 5)
            #expect(found.first?.subject == expected)
            #expect(found.first?.decision.color == .green)
            #expect(Set(found.map(\.subject)).count == found.count, "no subject twice")
        }
        await verification.custody.shutdown()
    }

    @Test("A template whose length is not its version's format is refused with that context, not scored")
    func wrongFormatRefused() async throws {
        let verification = try await VerificationHarness.make("compactwrong")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Overlap.enrol(verification, tenant, "subject", 0.61)
        #expect(try await Self.storedLengths(verification, tenant) == [[1, 1024]])

        // A wide-length token under a 1 KiB version (a bad restore, or a database writer): its
        // MAC no longer matches, so it is refused before its length is looked at.
        let wide = Data(repeating: 7, count: 4096)
        // (The table refuses a token changed under the MAC it keeps: the owner, its triggers off.)
        try await TemplateMACAttackTests.asOwnerWithoutTriggers(verification, tenant, "UPDATE templates SET token = \(wide)")
        await #expect(throws: RecordIntegrityError.template(keyVersion: 1)) {
            _ = try await Overlap.verify(verification, tenant, "subject", Overlap.probe(0.61))
        }
        let searcher = try await verification.consentedSession(tenant, "searcher")
        #expect(try await verification.flow.identify(tenant: tenant, session: searcher, features: try FeatureVector(Overlap.probe(0.61)), top: 5).isEmpty)
        // As a row written before template MACs (none yet, and not every template sealed): the
        // length is what refuses it.
        try await verification.custody.ownerSQL(tenant: tenant, "UPDATE templates SET record_mac = NULL, record_mac_version = NULL")
        await #expect(throws: TemplateFormatError.formatMismatch(keyVersion: 1, expected: .default, byteCount: 4096)) {
            _ = try await Overlap.verify(verification, tenant, "subject", Overlap.probe(0.61))
        }
        await #expect(throws: TemplateFormatError.formatMismatch(keyVersion: 1, expected: .default, byteCount: 4096)) {
            let session = try await verification.consentedSession(tenant, "searcher")
            _ = try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Overlap.probe(0.61)), top: 5)
        }
        // No format has any other length: the schema refuses it, and a reader names it.
        await #expect(throws: (any Error).self) {
            try await verification.custody.ownerSQL(tenant: tenant, "UPDATE templates SET token = \(Data(repeating: 7, count: 1000))")
        }
        #expect(throws: TemplateFormatError.formatMismatch(keyVersion: 1, expected: .compact, byteCount: 1000)) {
            _ = try StoredTemplate(keyVersion: 1, bytes: [UInt8](repeating: 7, count: 1000)).token(format: .compact)
        }
        await verification.custody.shutdown()
    }

    @Test("A version's recorded format is under its row MAC: changing or clearing it is tampering")
    func formatUnderRowMAC() async throws {
        let verification = try await VerificationHarness.make("compactmac")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        for change in ["1", "NULL"] {
            try await verification.custody.ownerSQL(tenant: tenant, "UPDATE key_versions SET token_format = \(unescaped: change) WHERE purpose = 'bio-prf'")
            // A keyring with nothing cached, as a restarted instance would be.
            do {
                let format = try await Self.wideKeyring(verification).biometricTokenFormat(tenant, version: 1)
                Issue.record("a changed format was read as \(format)")
            } catch let error as CustodyError {
                guard case .rowTampered(tenant, .bioPRF, 1) = error else { Issue.record("got \(error)"); return }
            }
        }
        await verification.custody.shutdown()
    }
}

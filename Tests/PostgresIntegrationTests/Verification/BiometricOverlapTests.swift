import Composition
import Custody
import CustosModel
import Foundation
@testable import Storage
import Synchronization
import Testing
import Tokenization
import Verification

/// A biometric rotation nobody notices (DESIGN §5): the old version keeps matching for the
/// tenant's overlap, a GREEN match under it moves the subject to the new version in the same
/// transaction, 1:N scans both versions, and the end of the window drops what did not move.
/// Real SoftHSM and PostgreSQL throughout.
@Suite("Biometric rotation overlap and silent migration")
struct BiometricOverlapTests {
    static func face(_ seed: Double) -> [Float] { (0..<128).map { Float(sin(Double($0) * seed + seed)) } }
    /// The same face with a little noise (scores GREEN under the default thresholds).
    static func probe(_ seed: Double) -> [Float] { face(seed).enumerated().map { $0.element + ($0.offset % 7 == 0 ? 0.02 : 0) } }
    struct InjectedCrash: Error {}

    /// The key versions of the tenant's templates, as stored (read as the schema owner).
    static func templateVersions(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> [Int] {
        try await verification.custody.owner.withTransaction(context: "read templates") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            var versions = [Int]()
            for try await version in try await connection.query("SELECT key_version FROM templates ORDER BY key_version", logger: Database.quiet).decode(Int.self) {
                versions.append(version)
            }
            return versions
        }
    }

    static func enrol(_ verification: VerificationHarness, _ tenant: TenantID, _ externalID: String, _ seed: Double) async throws -> String {
        let session = try await verification.consentedSession(tenant, externalID)
        return try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(face(seed))).subject.value
    }

    static func verify(_ verification: VerificationHarness, _ tenant: TenantID, _ externalID: String, _ features: [Float]) async throws -> (Decision, Int?) {
        let session = try await verification.consentedSession(tenant, externalID)
        let decision = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(features))
        return (decision, try await verification.sessions.status(tenant: tenant, session: session).biometricKeyVersion)
    }

    @Test("GREEN under the old version re-enrols the subject under the new one; the next verify compares under v2 directly")
    func greenMigrates() async throws {
        let verification = try await VerificationHarness.make("biomigrate")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "mover", 0.61)
        #expect(try await keyring.rotateBiometric(tenant, actor: "officer") == 2)
        #expect(try await keyring.biometricMatchingVersions(tenant) == [2, 1])

        let (first, firstVersion) = try await Self.verify(verification, tenant, "mover", Self.probe(0.61))
        #expect(first.color == .green)
        #expect(firstVersion == 1, "the outcome records the version actually compared")
        #expect(try await Self.templateVersions(verification, tenant) == [2], "stored under v2 from the probe, the v1 row deleted")
        #expect(verification.core.biometricMigrations == 1)

        let (second, secondVersion) = try await Self.verify(verification, tenant, "mover", Self.probe(0.61))
        #expect(second.color == .green)
        #expect(secondVersion == 2)
        #expect(verification.core.biometricMigrations == 1, "nothing left to migrate")
        #expect(try await verification.auditEntries("subject.reenrol").isEmpty, "no per-subject audit entry (DESIGN §9)")
        await verification.custody.shutdown()
    }

    @Test("The token-level verify migrates on GREEN too when given the older probe; without it, the old template is not found")
    func tokenLevelMigrates() async throws {
        let verification = try await VerificationHarness.make("biotoken")
        let (core, tokenizer) = (verification.core, verification.tokenizer)
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let subject = SubjectReference(value: "v1:" + String(repeating: "ef", count: 32), piiVersion: 1)
        try await core.enrol(tenant: tenant, subject: subject, token: try await tokenizer.tokenize(try FeatureVector(Self.face(0.61)), tenant: tenant))
        try await verification.custody.keyring.rotateBiometric(tenant, actor: "officer")

        let probe = try FeatureVector(Self.probe(0.61))
        let active = try await tokenizer.tokenize(probe, tenant: tenant)
        #expect(active.keyVersion == 2)
        await #expect(throws: VerificationError.notEnrolled) { _ = try await core.verify(tenant: tenant, subject: subject, probe: active) }
        let older = OlderBiometricProbes(versions: [1]) { version in try await tokenizer.tokenize(probe, tenant: tenant, version: version) }
        #expect(try await core.verify(tenant: tenant, subject: subject, probe: active, older: older).color == .green)
        #expect(try await Self.templateVersions(verification, tenant) == [2])
        #expect(try await core.verify(tenant: tenant, subject: subject, probe: active).color == .green, "under v2 directly, no older probe needed")
        await verification.custody.shutdown()
    }

    @Test("RED and AMBER under the old version never migrate")
    func amberAndRedStay() async throws {
        let verification = try await VerificationHarness.make("biostay")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "stayer", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")

        let (red, redVersion) = try await Self.verify(verification, tenant, "stayer", Self.face(2.9))
        #expect(red.color == .red)
        #expect(redVersion == 1)
        #expect(try await Self.templateVersions(verification, tenant) == [1])

        // A green threshold the noisy probe cannot reach: the genuine probe scores AMBER.
        _ = try await verification.policies.update(TenantPolicy.Changes(green: 0.999, amber: 0.5), for: tenant, actor: "officer")
        let (amber, amberVersion) = try await Self.verify(verification, tenant, "stayer", Self.probe(0.61))
        #expect(amber.color == .amber)
        #expect(amberVersion == 1)
        #expect(try await Self.templateVersions(verification, tenant) == [1])
        #expect(verification.core.biometricMigrations == 0)
        await verification.custody.shutdown()
    }

    @Test("Identify during the overlap finds subjects of both versions, each once")
    func identifyAcrossVersions() async throws {
        let verification = try await VerificationHarness.make("bioidentify")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let old = try await Self.enrol(verification, tenant, "old-subject", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let new = try await Self.enrol(verification, tenant, "new-subject", 1.37)
        #expect(try await Self.templateVersions(verification, tenant) == [1, 2])

        // A subject holding templates of both versions (as if caught mid-migration by a stale gallery).
        let both = SubjectReference(value: "v1:" + String(repeating: "cd", count: 32), piiVersion: 1)
        let bothFace = try FeatureVector(Self.face(2.3))
        try await verification.core.enrol(tenant: tenant, subject: both, token: try await verification.tokenizer.tokenize(bothFace, tenant: tenant, version: 1))
        try await verification.core.enrol(tenant: tenant, subject: both, token: try await verification.tokenizer.tokenize(bothFace, tenant: tenant))

        for (seed, expected) in [(0.61, old), (1.37, new), (2.3, both.value)] {
            let session = try await verification.consentedSession(tenant, "searcher")
            let found = try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Self.probe(seed)), top: 5)
            #expect(found.first?.subject == expected)
            #expect(found.first?.decision.color == .green)
            #expect(Set(found.map(\.subject)).count == found.count, "no subject twice")
        }
        await verification.custody.shutdown()
    }

    @Test("The window's end drops unmigrated templates, retires both keys and audits the count; the dropped subject is not enrolled")
    func closerDropsAndRetires() async throws {
        let verification = try await VerificationHarness.make("bioclose")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "active-user", 0.61)
        _ = try await Self.enrol(verification, tenant, "absent-user", 1.37)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        #expect(try await Self.verify(verification, tenant, "active-user", Self.probe(0.61)).0.color == .green)
        #expect(try await Self.templateVersions(verification, tenant) == [1, 2])

        #expect(try await keyring.closeEndedBiometricOverlaps(now: Date()).isEmpty, "inside the window nothing closes")
        let closed = try await keyring.closeEndedBiometricOverlaps(now: Date().addingTimeInterval(31 * 86_400))
        #expect(closed.map(\.tenant) == [tenant] && closed.map(\.version) == [1] && closed.map(\.templatesDropped) == [1])
        #expect(try await Self.templateVersions(verification, tenant) == [2])
        let v1 = try await keyring.versions(tenant).filter { ($0.purpose == .bioSeed || $0.purpose == .bioPRF) && $0.version == 1 }
        #expect(v1.count == 2 && v1.allSatisfy { $0.state == .retired })
        let entries = try await verification.auditEntries(AuditAction.biometricOverlapClose.rawValue)
        #expect(entries.count == 1)
        let details = try JSONSerialization.jsonObject(with: Data((entries.first?.details ?? "{}").utf8)) as? [String: String]
        #expect(details == ["templates_dropped": "1", "reason": "window_ended"], "a count, no subject references")
        #expect(entries.first?.target == "bio/v1")

        await #expect(throws: VerificationError.notEnrolled) {
            _ = try await Self.verify(verification, tenant, "absent-user", Self.probe(1.37))
        }
        #expect(try await Self.verify(verification, tenant, "active-user", Self.probe(0.61)).0.color == .green)
        #expect(try await keyring.closeEndedBiometricOverlaps(now: Date().addingTimeInterval(31 * 86_400)).isEmpty, "closed once")
        await verification.custody.shutdown()
    }

    @Test("serve's background work closes an overlap whose window ended, at start-up")
    func backgroundWorkCloses() async throws {
        let verification = try await VerificationHarness.make("bioserve")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "absent-user", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        verification.clock.advance(days: 31)
        let background = Task { await verification.graph.runBackground() }
        var remaining = try await Self.templateVersions(verification, tenant)
        for _ in 0..<600 where !remaining.isEmpty {
            try await Task.sleep(for: .milliseconds(50))
            remaining = try await Self.templateVersions(verification, tenant)
        }
        background.cancel()
        await background.value
        #expect(remaining.isEmpty, "the v1 template was dropped by the closer serve runs")
        let v1 = try await keyring.versions(tenant).filter { ($0.purpose == .bioSeed || $0.purpose == .bioPRF) && $0.version == 1 }
        #expect(v1.allSatisfy { $0.state == .retired })
        await verification.custody.shutdown()
    }

    @Test("key retire of a biometric version inside its overlap is refused: an early end needs two officers")
    func retireRefusedInOverlap() async throws {
        let verification = try await VerificationHarness.make("bioretire")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "kept", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        for purpose in [KeyPurpose.bioSeed, .bioPRF] {
            do {
                try await keyring.retire(tenant, purpose, version: 1, actor: "officer")
                Issue.record("retired \(purpose.rawValue) v1 inside its overlap")
            } catch let error as CustodyError {
                guard case .biometricOverlapOpen(_, purpose, 1, _) = error else { Issue.record("got \(error)"); continue }
                #expect(error.description.contains("two officers"))
            }
        }
        #expect(try await Self.templateVersions(verification, tenant) == [1], "nothing dropped")
        #expect(try await keyring.biometricMatchingVersions(tenant) == [2, 1])
        await verification.custody.shutdown()
    }

    @Test("A failure inside the migration transaction leaves the old template, and the session open")
    func crashInMigrationKeepsOldTemplate() async throws {
        let crash = CrashSwitch()
        let verification = VerificationHarness(try await CustodyHarness.make("biomigratecrash")) { settings in
            settings.biometricMigrationFault = { if crash.armed { throw InjectedCrash() } }
        }
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await Self.enrol(verification, tenant, "mover", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")

        let session = try await verification.consentedSession(tenant, "mover")
        crash.armed = true
        await #expect(throws: InjectedCrash.self) {
            _ = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.probe(0.61)))
        }
        #expect(try await Self.templateVersions(verification, tenant) == [1], "the new row rolled back with the rest; v1 intact")
        #expect(try await verification.sessions.status(tenant: tenant, session: session).state == .consented, "no outcome recorded")
        #expect(verification.core.biometricMigrations == 0)

        crash.armed = false
        #expect(try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.probe(0.61))).color == .green)
        #expect(try await Self.templateVersions(verification, tenant) == [2])
        await verification.custody.shutdown()
    }

    @Test("bio_overlap_days 0 keeps the old behaviour: the old version retires at once and its subjects re-enrol")
    func zeroOverlapIsTheCliff() async throws {
        let verification = try await VerificationHarness.make("biozero")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await verification.policies.update(TenantPolicy.Changes(bioOverlapDays: 0), for: tenant, actor: "officer")
        _ = try await Self.enrol(verification, tenant, "cliff", 0.61)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let v1 = try await keyring.versions(tenant).filter { ($0.purpose == .bioSeed || $0.purpose == .bioPRF) && $0.version == 1 }
        #expect(v1.count == 2 && v1.allSatisfy { $0.state == .retired })
        await #expect(throws: VerificationError.notEnrolled) {
            _ = try await Self.verify(verification, tenant, "cliff", Self.probe(0.61))
        }
        await verification.custody.shutdown()
    }

    @Test("A biometric rotation interrupted after bio-seed is completed at start-up with the overlap bio-seed already has")
    func reconcileKeepsTheOverlap() async throws {
        // Both pending versions are stored; the crash comes after bio-seed is active, bio-prf not yet.
        let custody = try await CustodyHarness.make("bioreconcile", keyringStepHook: { step in
            if step == .completed(.bioSeed) { throw InjectedCrash() }
        })
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        await #expect(throws: InjectedCrash.self) { try await custody.keyring.rotateBiometric(tenant, actor: "officer") }

        let restarted = TenantKeyring(pool: custody.pool, database: custody.service, audit: custody.audit, logger: custody.logs.logger)
        #expect(try await restarted.reconcile() == [.completed(tenant, .bioPRF, version: 2)])
        let v1 = try await custody.keyring.versions(tenant).filter { ($0.purpose == .bioSeed || $0.purpose == .bioPRF) && $0.version == 1 }
        #expect(v1.count == 2 && v1.allSatisfy { $0.state == .retiring }, "not retired at once: enrolled subjects would fall off the cliff")
        #expect(Set(v1.map(\.retiringUntil)).count == 1, "the pair ends together")
        #expect(try await custody.keyring.biometricMatchingVersions(tenant) == [2, 1])
        await custody.shutdown()
    }
}

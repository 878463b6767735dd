import Composition
import Custody
import CustosModel
import Foundation
import HSMTestSupport
import Storage
import Testing
import Tokenization
import Verification

/// A real `kill -9` of `custos serve` exactly between two steps of a key rotation (debug builds
/// stop there when `CUSTOS_CRASH_AT` names the step, ``StepFault``): start-up reconciliation
/// then leaves exactly one active version per purpose, the two biometric keys on one version,
/// and everything stored before the crash still opens or matches.
@Suite("Key rotation survives kill -9 between its steps", .serialized)
struct RotationKillTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.53)) }

    /// Starts `custos serve` on the harness's token and schema, armed to kill itself at `step`,
    /// runs `custos key rotate` against it, and returns once the server died.
    /// - Returns: how the server and the CLI ended.
    static func rotateUntilKilled(
        _ verification: VerificationHarness, tenant: TenantID, purpose: KeyPurpose, at step: String
    ) async throws -> (server: Process, cli: Process) {
        let directory = try ChildCustos.directory(verification.custody)
        let config = try ChildCustos.writeConfiguration(verification.custody, in: directory)
        let (server, address) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": step])
        guard let address else { throw ChildCustos.TestFailure("custos serve died at start-up") }
        let cli = try ChildCustos.spawn(["key", "rotate", "--config", config, "--server", address, "--tenant", tenant.rawValue, "--purpose", purpose.rawValue])
        // Bounded: a server that never reaches the step (the call failed) is stopped after 3
        // minutes and the checks below fail, rather than the suite hanging.
        try await ChildCustos.waitForExit(cli, seconds: 180)
        try await ChildCustos.waitForExit(server, seconds: 180)
        return (server, cli)
    }

    static func expectKilled(_ ended: (server: Process, cli: Process)) {
        #expect(ChildCustos.killedItself(ended.server), "the server stopped itself with SIGKILL at the step")
        #expect(ended.cli.terminationStatus == 2, "the CLI reports the lost server")
    }

    @Test("data: killed after the new version is stored pending; start-up activates it, the old one retires, old ciphertexts open")
    func dataRotationKilledAfterPending() async throws {
        let verification = try await VerificationHarness.make("rotkilldata")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let context = Array("crash-test".utf8)
        let sealed = try await verification.sealer.seal(PersonalText("Ada Lovelace"), tenant: tenant, keyVersion: nil, context: context)

        Self.expectKilled(try await Self.rotateUntilKilled(verification, tenant: tenant, purpose: .data, at: "rotation.pendingStored"))
        let interrupted = try await keyring.versions(tenant).filter { $0.purpose == .data }
        #expect(interrupted.map(\.state).sorted { $0.rawValue < $1.rawValue } == [.active, .pending], "the kill landed between the two steps")

        #expect(try await keyring.reconcile() == [.completed(tenant, .data, version: 2)])
        let data = try await keyring.versions(tenant).filter { $0.purpose == .data }
        #expect(data.filter { $0.state == .active }.map(\.version) == [2], "exactly one active version")
        #expect(data.first { $0.version == 1 }?.state == .retired)
        let opened = try await verification.sealer.open(sealed.sealed, keyVersion: sealed.keyVersion, tenant: tenant, context: context)
        #expect(opened.value == "Ada Lovelace", "what v1 sealed still opens")
        #expect(try await verification.sealer.seal(PersonalText("x"), tenant: tenant, keyVersion: nil, context: context).keyVersion == 2)
        await verification.custody.shutdown()
    }

    @Test("bio: killed between activating bio-seed and bio-prf; start-up completes the pair with one overlap end, and the old enrolment verifies GREEN", arguments: [
        "rotation.completed.bio-seed", "rotation.pendingStored",
    ])
    func biometricRotationKilledHalfway(step: String) async throws {
        let verification = try await VerificationHarness.make("rotkillbio")
        let graph = verification.graph
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        func consented() async throws -> UUID {
            let created = try await graph.sessions.create(tenant: tenant, externalID: PersonalText("crash-subject"), name: nil, email: nil)
            let session = try await graph.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
            _ = try await graph.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "custos-notice-1")
            return session
        }
        _ = try await graph.flow.enrol(tenant: tenant, session: try await consented(), features: try FeatureVector(Self.face))

        Self.expectKilled(try await Self.rotateUntilKilled(verification, tenant: tenant, purpose: .bioSeed, at: step))
        _ = try await keyring.reconcile()
        let biometric: [KeyPurpose] = [.bioSeed, .bioPRF]
        let bio: [KeyVersionRecord] = try await keyring.versions(tenant).filter { biometric.contains($0.purpose) }
        for purpose in biometric {
            let active: [Int] = bio.filter { $0.purpose == purpose && $0.state == .active }.map(\.version)
            #expect(active == [2], "\(purpose.rawValue): one active version, v2")
        }
        let old: [KeyVersionRecord] = bio.filter { $0.version == 1 }
        #expect(old.count == 2 && old.allSatisfy { $0.state == KeyState.retiring }, "v1 keeps its overlap")
        let ends: Set<Date?> = Set(old.map(\.retiringUntil))
        #expect(ends.count == 1, "bio-seed and bio-prf end together")

        let decision = try await graph.flow.verify(tenant: tenant, session: try await consented(), features: try FeatureVector(Self.face))
        #expect(decision.color == .green, "the enrolment made before the crash still matches")
        await verification.custody.shutdown()
    }
}

import Composition
import Custody
import CustosModel
import Foundation
import GRPCCore
import RPC
import SecureMemory
import SwiftProtobuf
import Testing
import Tokenization
import Verification

/// Issue 11 §2 end to end: rotate every purpose, migrate what is stored (re-seal `data`, look
/// subjects up for `pii`, present API keys for the pepper, verify GREEN inside the `bio` overlap and
/// have two officers end it, end the webhook overlap), watch `KeyStatus` reach zero references for every old version, have two officers
/// destroy them, and check that everything still verifies and decrypts under the new versions.
@Suite("Admin: rotate, migrate, and destroy every old key version", .serialized)
struct KeyMigrationEndToEndTests {
    static let faces: [[Float]] = [
        (0..<128).map { Float(sin(Double($0) * 0.61)) },
        (0..<128).map { Float(cos(Double($0) * 1.37)) },
    ]

    /// A session of `externalID` whose candidate opened the link and consented.
    static func consented(_ graph: VerificationGraph, _ tenant: TenantID, _ externalID: String, name: String? = nil, email: String? = nil) async throws -> UUID {
        let created = try await graph.sessions.create(
            tenant: tenant, externalID: PersonalText(externalID), name: name.map(PersonalText.init), email: email.map(PersonalText.init)
        )
        let session = try await graph.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        _ = try await graph.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "custos-notice-1")
        return session
    }

    @Test("Every old version reaches zero references in KeyStatus, two officers destroy it, and the data still verifies and decrypts")
    func rotateMigrateDestroy() async throws {
        var settings = RPCSettings()
        settings.destructionWaitingPeriod = .zero
        try await RPCHarness.with("keymigration", settings: settings) { rpc in
            let graph = rpc.services.graph
            try await rpc.withClient(.alice) { aliceClient in
                try await rpc.withClient(.bob) { bobClient in
                    let alice = Custos_V1_Admin.Client(wrapping: aliceClient)
                    let bob = Custos_V1_Admin.Client(wrapping: bobClient)
                    let tenantText = try await alice.createTenant(.with { $0.label = "acme" }).tenant.tenantID
                    let tenant = try #require(TenantID(tenantText))

                    // Before any rotation: two enrolled subjects with sealed names, an API key, a webhook secret.
                    let people = [("e2e-1", "Ada Lovelace", "ada@example.test"), ("e2e-2", "Alan Turing", nil as String?)]
                    for (index, person) in people.enumerated() {
                        let session = try await Self.consented(graph, tenant, person.0, name: person.1, email: person.2)
                        _ = try await graph.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.faces[index]))
                    }
                    let issued = try await alice.issueAPIKey(.with { $0.tenantID = tenantText; $0.scopes = ["verification"] })
                    _ = try await alice.createWebhookSecret(.with { $0.tenantID = tenantText })

                    // Rotate every purpose.
                    for purpose in [KeyPurpose.data, .pii, .apiKeyPepper, .bioSeed] {
                        _ = try await alice.rotateKey(.with { $0.tenantID = tenantText; $0.purpose = purpose.wire })
                    }
                    let secret = try await alice.createWebhookSecret(.with { $0.tenantID = tenantText; $0.overlapSeconds = 3_600 })
                    #expect(secret.version == 2)

                    let stale = try await alice.keyStatus(.with { $0.tenantID = tenantText })
                    func version(_ status: Custos_V1_KeyStatusResponse, _ purpose: KeyPurpose, _ number: UInt32) -> Custos_V1_KeyVersionStatus? {
                        status.versions.first { $0.key.purpose == purpose.wire && $0.key.version == number }
                    }
                    #expect(version(stale, .data, 1)?.sealedRecords == 2)
                    #expect(version(stale, .pii, 1)?.references == 4, "two templates and two sessions")
                    #expect(version(stale, .apiKeyPepper, 1)?.apiKeys == 1)
                    #expect(version(stale, .bioSeed, 1)?.templates == 2 && version(stale, .bioPRF, 1)?.templates == 2)
                    #expect(version(stale, .webhook, 1)?.signing == true && version(stale, .webhook, 1)?.key.hasRetiringUntil == true, "in its overlap")
                    #expect(stale.purposes.first { $0.purpose == KeyPurpose.data.wire }?.percentMigrated == 0)

                    // A purpose without sealed records is refused with the reason.
                    await #expect {
                        try await alice.resealKeys(.with { $0.tenantID = tenantText; $0.purpose = KeyPurpose.pii.wire }) { response in
                            for try await _ in response.messages {}
                        }
                    } throws: { error in
                        guard let error = error as? RPCError else { return false }
                        return error.code == .invalidArgument && error.message.contains("looked up")
                    }

                    // Migrate. data: re-seal over the RPC, progress streamed.
                    let progress = try await alice.resealKeys(.with { $0.tenantID = tenantText; $0.purpose = KeyPurpose.data.wire; $0.batchSize = 1 }) { response in
                        var all = [Custos_V1_ResealKeysProgress]()
                        for try await message in response.messages { all.append(message) }
                        return all
                    }
                    #expect(progress.map(\.resealed) == [1, 2, 2] && progress.last?.done == true && progress.last?.targetVersion == 2)
                    // pii and bio: each subject comes back for a verification: looked up (moved to pii v2),
                    // matched GREEN under bio v1 inside its overlap and silently re-enrolled under bio v2.
                    for (index, person) in people.enumerated() {
                        let session = try await Self.consented(graph, tenant, person.0)
                        #expect(try await graph.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.faces[index])).color == .green)
                        let status = try await graph.sessions.status(tenant: tenant, session: session)
                        #expect(status.biometricKeyVersion == 1, "compared under the old version, once")
                    }
                    let moved = try await alice.keyStatus(.with { $0.tenantID = tenantText })
                    #expect(version(moved, .bioSeed, 1)?.templates == 0 && version(moved, .bioSeed, 2)?.templates == 2, "both moved on their GREEN")
                    #expect(version(moved, .bioSeed, 1)?.key.state == .retiring, "still in its overlap")
                    // bio: the officers end the overlap early; one officer alone cannot.
                    let end = try await alice.requestBiometricOverlapEnd(.with { $0.tenantID = tenantText; $0.version = 1 })
                    await #expect {
                        _ = try await alice.approveBiometricOverlapEnd(.with { $0.requestID = end.requestID })
                    } throws: { error in (error as? RPCError)?.code == .permissionDenied }
                    let ended = try await bob.approveBiometricOverlapEnd(.with { $0.requestID = end.requestID })
                    #expect(ended.templatesDropped == 0 && ended.key.state == .retired, "nothing left to drop: everyone migrated")
                    // apikey-pepper: the key is presented once and re-hashed.
                    _ = try await graph.custody.apiKeys.verify(SecretBytes(Array(issued.apiKey.utf8)))
                    // webhook: the officers end the overlap now.
                    _ = try await alice.retireKey(.with { $0.tenantID = tenantText; $0.purpose = KeyPurpose.webhook.wire; $0.version = 1 })

                    let migrated = try await alice.keyStatus(.with { $0.tenantID = tenantText })
                    let old: [(KeyPurpose, UInt32)] = [(.data, 1), (.pii, 1), (.apiKeyPepper, 1), (.bioSeed, 1), (.bioPRF, 1), (.webhook, 1)]
                    for (purpose, number) in old {
                        let status = try #require(version(migrated, purpose, number))
                        #expect(status.references == 0 && !status.signing, "\(purpose.rawValue) v\(number) still needed")
                        #expect(status.key.state == .retired)
                    }
                    for purpose in migrated.purposes {
                        #expect(purpose.percentMigrated == 100, "\(UserFacing.name(purpose.purpose)) not fully migrated")
                    }

                    // Two officers schedule the destruction of every old version (7 days, the shortest
                    // wait); once due it is carried out (here by an executor whose clock is 8 days on).
                    let custody = graph.custody
                    let later = KeyDestructionApprovals(
                        database: custody.database, keyring: custody.keyring, audit: custody.audit, now: { Date().addingTimeInterval(8 * 86_400) }
                    )
                    for (purpose, number) in old {
                        let request = try await alice.requestKeyDestruction(.with {
                            $0.tenantID = tenantText; $0.purpose = purpose.wire; $0.version = number; $0.waitingDays = 7
                        })
                        _ = try await bob.approveKeyDestruction(.with { $0.requestID = request.requestID })
                        await #expect { _ = try await alice.destroyKey(.with { $0.requestID = request.requestID }) } throws: { error in
                            (error as? RPCError)?.code == .failedPrecondition
                        }
                        _ = try await later.execute(try #require(UUID(uuidString: request.requestID)), officer: "officer:officer-alice", waitingPeriod: .zero)
                    }
                    let destroyed = try await alice.keyStatus(.with { $0.tenantID = tenantText })
                    for (purpose, number) in old {
                        #expect(version(destroyed, purpose, number)?.key.state == .destroyed, "\(purpose.rawValue) v\(number)")
                    }

                    // Everything still verifies and decrypts under the new versions.
                    for (index, person) in people.enumerated() {
                        let session = try await Self.consented(graph, tenant, person.0)
                        #expect(try await graph.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.faces[index])).color == .green)
                        let export = try await alice.exportSubject(.with { $0.tenantID = tenantText; $0.subjectExternalID = person.0 })
                        let json = String(decoding: export.json, as: UTF8.self)
                        #expect(json.contains(person.1), "the name decrypts under data v2")
                        if let email = person.2 { #expect(json.contains(email)) }
                    }
                    #expect(try await graph.custody.apiKeys.verify(SecretBytes(Array(issued.apiKey.utf8))).tenant == tenant)
                    let header = try await graph.custody.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1_700_000_000, body: Array("{}".utf8))
                    #expect(header.split(separator: " ").count == 1, "only the new secret signs")
                    let verifier = WebhookVerifier(secrets: [try StandardWebhooks.decodeSecret(secret.secret)])
                    try verifier.verify(id: "msg_1", timestamp: "1700000000", signatureHeader: header, body: Array("{}".utf8), now: 1_700_000_000)
                }
            }
        }
    }

    @Test("KeyStatus and ResealKeys refuse callers' mistakes with precise codes")
    func refusals() async throws {
        try await RPCHarness.with("keystatusrefusals") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            func reseal(_ identity: RPCHarness.Identity, _ change: @escaping @Sendable (inout Custos_V1_ResealKeysRequest) -> Void) async -> RPCError.Code? {
                await RPCHarness.code {
                    try await rpc.withClient(identity) { client in
                        var request = Custos_V1_ResealKeysRequest.with { $0.tenantID = tenant; $0.purpose = KeyPurpose.data.wire }
                        change(&request)
                        let message = request
                        try await Custos_V1_Admin.Client(wrapping: client).resealKeys(message) { response in
                            for try await _ in response.messages {}
                        }
                    }
                }
            }
            #expect(await reseal(.frontend) { _ in } == .permissionDenied)
            #expect(await reseal(.alice) { $0.tenantID = UUID().uuidString.lowercased() } == .notFound)
            #expect(await reseal(.alice) { $0.tenantID = "acme" } == .invalidArgument)
            #expect(await reseal(.alice) { $0.batchSize = 1_001 } == .invalidArgument)
            #expect(await reseal(.alice) { $0.purpose = .unspecified } == .invalidArgument)
            #expect(await reseal(.alice) { $0.purpose = KeyPurpose.bioSeed.wire } == .invalidArgument)
            #expect(await reseal(.alice) { _ in } == nil)
            let status = await RPCHarness.code {
                try await rpc.withClient(.alice) { client in
                    _ = try await Custos_V1_Admin.Client(wrapping: client).keyStatus(.with { $0.tenantID = UUID().uuidString.lowercased() })
                }
            }
            #expect(status == .notFound)
            let frontend = await RPCHarness.code {
                try await rpc.withClient(.frontend) { client in
                    _ = try await Custos_V1_Admin.Client(wrapping: client).keyStatus(.with { $0.tenantID = tenant })
                }
            }
            #expect(frontend == .permissionDenied)
        }
    }
}

/// Purpose names as users spell them, for messages.
enum UserFacing {
    static func name(_ wire: Custos_V1_KeyPurpose) -> String { KeyPurpose(wire: wire)?.rawValue ?? "unspecified" }
}

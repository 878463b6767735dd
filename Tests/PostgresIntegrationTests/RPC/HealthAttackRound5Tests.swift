import Foundation
import GRPCCore
import RPC
@testable import Storage
import Synchronization
import Testing

/// Attack review, round 5 (docs/threat-model.md): the health service is exempt from roles, not
/// from revocation.
@Suite("Attack review, round 5: a revoked certificate on the health service", .serialized)
struct HealthAttackRound5Tests {
    @Test("A revoked front-end certificate is refused by Health as by every other service; an unrevoked one is answered")
    func revokedFrontEndRefused() async throws {
        try await RPCHarness.with("atk5health") { rpc in
            let check = { (identity: RPCHarness.Identity) in
                await RPCHarness.code {
                    try await rpc.withClient(identity) { client in
                        _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init(), options: RPCHarness.fast)
                    }
                }
            }
            #expect(await check(.narrow) == nil, "answered before the revocation")
            try await rpc.withClient(.alice) { client in
                _ = try await Custos_V1_Admin.Client(wrapping: client).revokeCertificate(.with {
                    $0.serial = try! RPCAuthTests.serial(rpc.certificates.path("frontend-narrow.pem"))
                    $0.subject = "custos://frontend/narrow"
                })
            }
            // Before the fix the health service answered any certificate of the CA.
            #expect(await check(.narrow) == .unauthenticated, "a revoked front-end")
            #expect(await check(.frontend) == nil, "another front-end is still answered")
        }
    }

    @Test("A Watch stream open before its front-end certificate is revoked ends with UNAUTHENTICATED")
    func watchOfRevokedFrontEndCut() async throws {
        try await RPCHarness.with("atk5watch") { rpc in
            let serial = try RPCAuthTests.serial(rpc.certificates.path("frontend-narrow.pem"))
            // The call's deadline only bounds the test: before the fix the stream stayed open
            // until it (DEADLINE_EXCEEDED), however long after the revocation.
            let (answered, code) = await Self.watchRevokedWhileOpen(rpc) {
                try await rpc.withClient(.alice) { admin in
                    _ = try await Custos_V1_Admin.Client(wrapping: admin).revokeCertificate(.with {
                        $0.serial = serial
                        $0.subject = "custos://frontend/narrow"
                    })
                }
            }
            #expect(answered >= 1, "the stream was answered before the revocation")
            #expect(code == .unauthenticated, "the stream of a revoked certificate was not cut (ended with \(String(describing: code)))")
        }
    }
}

extension HealthAttackRound5Tests {
    @Test("A Watch whose certificate is revoked while the deny-list cannot be read is cut once it can be read again")
    func watchCutAfterUnreadableDenyList() async throws {
        // Attack review, session 12: a failed read counted as "not revoked" and the stream then
        // waited for the next notice only; killing the service's read at the right moment (the
        // service role may terminate its own backends) kept the stream open until an unrelated
        // revocation.
        try await RPCHarness.with("atk5unread") { rpc in
            let serial = try RPCAuthTests.serial(rpc.certificates.path("frontend-narrow.pem"))
            let owner = rpc.custody.owner
            let service = rpc.custody.settings.serviceUser
            let (answered, code) = await Self.watchRevokedWhileOpen(rpc) {
                // Revoked and announced while the service role cannot read the list.
                _ = try await owner.withTransaction(context: "test: revoke unreadably") { connection in
                    try await connection.query("REVOKE SELECT ON revoked_certificates FROM \(unescaped: service)", logger: Database.quiet)
                    try await connection.query("""
                        INSERT INTO revoked_certificates (serial, subject, revoked_by) VALUES (\(serial), 'custos://frontend/narrow', 'officer-test')
                        """, logger: Database.quiet)
                    try await CacheChange.certificateRevocations.announce(on: connection)
                }
                try await Task.sleep(for: .milliseconds(300))
                _ = try await owner.withTransaction(context: "test: readable again") { connection in
                    try await connection.query("GRANT SELECT ON revoked_certificates TO \(unescaped: service)", logger: Database.quiet)
                }
            }
            #expect(answered >= 1, "the stream was answered before the revocation")
            #expect(code == .unauthenticated, "the stream outlived its revocation (ended with \(String(describing: code)))")
        }
    }
}

extension HealthAttackRound5Tests {
    /// Opens a health Watch as the narrow front-end, runs `revoke` once the first status
    /// arrived (the call authenticated), and reads on until the stream ends.
    /// - Returns: the statuses received and the code the stream ended with.
    static func watchRevokedWhileOpen(_ rpc: RPCHarness, revoke: @escaping @Sendable () async throws -> Void) async -> (Int, RPCError.Code?) {
        let statuses = SeenStatuses()
        let code = await RPCHarness.code {
            try await rpc.withClient(.narrow) { client in
                try await Grpc_Health_V1_Health.Client(wrapping: client).watch(.init(), options: RPCHarness.fast) { response in
                    for try await _ in response.messages where statuses.count.withLock({ $0 += 1; return $0 }) == 1 {
                        try await revoke()
                    }
                }
            }
        }
        return (statuses.count.withLock { $0 }, code)
    }
}

/// Statuses a Watch received (written from the response handler).
final class SeenStatuses: Sendable {
    let count = Mutex(0)
}

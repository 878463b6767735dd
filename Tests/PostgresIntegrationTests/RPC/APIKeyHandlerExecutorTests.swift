import GRPCCore
import HSM
import RPC
import Testing

/// helper-84: an API-key call's task starts on an HSM worker so that the key's HMAC runs inline.
/// Its handler stayed there: a Verify's projection, an Identify's gallery scan and every
/// resumption after a database round trip ran on one of the pool's few threads, ahead of other
/// calls' HSM requests, and its own HSM calls skipped the queue's wait limit and the replicas.
@Suite("RPC: an API-key call leaves the HSM worker once its key is verified", .serialized)
struct APIKeyHandlerExecutorTests {
    @Test("A Verify with a key the HSM has not just confirmed queues its own HSM calls as a certificate caller's do")
    func verifyLeavesTheWorker() async throws {
        try await RPCHarness.with("rpcexecutor") { rpc in
            let (tenant, keys) = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let tenant = try await admin.createTenant(.with { $0.label = "acme" }).tenant.tenantID
                var keys = [String]()
                for _ in 0..<2 { keys.append(try await admin.issueAPIKey(.with { $0.tenantID = tenant; $0.scopes = ["verification"] }).apiKey) }
                return (tenant, keys)
            }
            let scope = tenantMetadata(tenant)
            try await rpc.withClient(.frontend) { client in
                let verification = Custos_V1_Verification.Client(wrapping: client)
                func consentedSession() async throws -> String { try await PostgresIntegrationTests.consentedSession(verification, scope: scope) }
                let enrolment = try await consentedSession()
                _ = try await verification.enrol(.with { $0.sessionID = enrolment; $0.features = RPCOracleTests.face }, metadata: scope)

                // Each key's first use: not recently verified, so the task starts on a worker.
                for (index, key) in keys.enumerated() {
                    let session = try await consentedSession()
                    let before = rpc.custody.pool.statistics.requestsQueued
                    let decision = try await verification.verify(.with { $0.sessionID = session; $0.features = RPCOracleTests.face }, metadata: bearer(key))
                    let queued = rpc.custody.pool.statistics.requestsQueued - before
                    #expect(decision.decision.color == .green)
                    // The session's and template's MACs, the PRF, the outcome's seal: queued, as
                    // for a certificate caller; on the worker all three ran inline (0).
                    #expect(queued >= 3, "key \(index): \(queued) HSM requests queued; the handler ran on the worker")
                }
            }
        }
    }
}

import GRPCCore
import Logging
@testable import RPC
import Testing

@Suite("The status a failed response is counted and answered with")
struct TransportRefusalStatusTests {
    static let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    @Test("The transport's refusal of a request's framing is RESOURCE_EXHAUSTED, not INTERNAL; other failures keep their code")
    func transportRefusal() {
        let method = "custos.v1.Verification/CreateSession"
        let refused = AuthenticationInterceptor.status(
            ofFailed: RPCError(code: .internalError, message: "Failed to decode message"), method: method, logger: Self.logger
        )
        #expect(refused.code == .resourceExhausted)
        let other = AuthenticationInterceptor.status(ofFailed: RPCError(code: .internalError, message: "something else"), method: method, logger: Self.logger)
        #expect(other.code == .internalError)
        let handlerError = AuthenticationInterceptor.status(
            ofFailed: RPCError(code: .unknown, message: "", cause: CancellationError()), method: method, logger: Self.logger
        )
        #expect(handlerError.code == .cancelled)
    }
}

import CustosModel
import Dispatch
public import GRPCCore
public import Logging

/// The one door every RPC passes: authenticates the caller (``Authenticator``), runs the handler
/// with ``Caller/current`` set, turns whatever it throws into the precise status
/// (``StatusMapping``), and counts requests by method and code and their latency.
public struct AuthenticationInterceptor: ServerInterceptor {
    let authenticator: Authenticator
    let logger: Logger

    /// Methods whose handler has nothing to do after authentication but answer: an API-key
    /// call's task stays on the HSM worker that verified its key (no hop back).
    static let handledOnHSMWorker: Set<MethodDescriptor> = [
        Custos_V1_APIKeys.Method.WhoAmI.descriptor, Custos_V1_Verification.Method.Ping.descriptor,
    ]
    private let certificates = CallerCertificateCache()
    private let metrics = RPCCallMetrics()

    public init(authenticator: Authenticator, logger: Logger) {
        self.authenticator = authenticator
        self.logger = logger
    }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let method = context.descriptor.fullyQualifiedMethod
        let started = DispatchTime.now().uptimeNanoseconds
        var code = "ok"
        defer { metrics.record(method: method, code: code, nanoseconds: Int64(DispatchTime.now().uptimeNanoseconds - started)) }
        do {
            let certificate = certificates.caller(verifiedPeerOf: context)
            let authenticator = authenticator
            // grpc-swift signals a passed deadline or a vanished client through the RPC's
            // cancellation handle, not by cancelling the handler's task: turn it into task
            // cancellation, which the HSM pool and the database honour (a transaction cut off
            // rolls back).
            // `next` does not outlive this call: the task is awaited before returning.
            let response = try await withoutActuallyEscaping(next) { next in
                // The task starts on this thread (`immediate`: no hop to start it, none back
                // when it finishes without suspending), except for an API-key call: its task
                // starts on an HSM worker, where the key's HMAC then runs inline rather than
                // hopping there and back (`bench pool`: a hop costs about as much as the HMAC).
                let preferred = authenticator.preferredExecutor(for: request.metadata)
                let leavesWorker = preferred != nil && !Self.handledOnHSMWorker.contains(context.descriptor)
                let work = Task.immediate(executorPreference: preferred) {
                    let caller = try await authenticator.authenticate(
                        service: context.descriptor.service.fullyQualifiedService, metadata: request.metadata, certificate: certificate
                    )
                    return try await Caller.$current.withValue(caller) {
                        // The key's HMAC done, a handler with work of its own leaves the HSM
                        // worker (helper-84): there its projection or gallery scan would hold up
                        // every other call's HSM requests, its own HSM calls would skip the queue's
                        // wait limit and the replica tokens, and each resumption after a
                        // database round trip would wait for one of the pool's few threads
                        // (session 19 measured that slower).
                        guard leavesWorker else { return try await next(request, context) }
                        return try await withTaskExecutorPreference(globalConcurrentExecutor) { try await next(request, context) }
                    }
                }
                return try await withRPCCancellationHandler {
                    try await work.value
                } onCancelRPC: {
                    work.cancel()
                }
            }
            if case .failure(let error) = response.accepted {
                let status = Self.status(ofFailed: error, method: method, logger: logger)
                code = "\(status.code)"
                return StreamingServerResponse(error: status)
            }
            return response
        } catch {
            let status = StatusMapping.rpcError(for: error, method: method, logger: logger)
            code = "\(status.code)"
            throw status
        }
    }

    /// The precise status of a call whose response failed.
    static func status(ofFailed error: RPCError, method: String, logger: Logger) -> RPCError {
        // An error a handler throws reaches here already wrapped by grpc-swift as UNKNOWN, with
        // the original as its cause.
        if error.code == .unknown, let cause = error.cause {
            return StatusMapping.rpcError(for: cause, method: method, logger: logger)
        }
        // The transport refused the request's framing — a length prefix over the 1 MiB limit (its
        // deframer's RESOURCE_EXHAUSTED, which grpc-swift-nio-transport replaces with this), or
        // a compressed frame without compression — and reset the stream: the caller never sees
        // a status, but it was counted INTERNAL, a Custos bug, at any caller's will (helper-91).
        if error.code == .internalError, error.cause == nil, error.message == "Failed to decode message" {
            logger.debug("request refused by the transport: over 1 MiB, or not a gRPC frame", metadata: ["method": "\(method)"])
            return RPCError(code: .resourceExhausted, message: "request larger than the transport's limit (1 MiB) or not a gRPC frame")
        }
        return error
    }
}

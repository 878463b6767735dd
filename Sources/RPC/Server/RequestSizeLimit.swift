public import GRPCCore
import SwiftProtobuf

/// Refuses request messages over `maxBytes` with RESOURCE_EXHAUSTED (DESIGN §10).
///
/// Why here and not only in the transport: grpc-swift-nio-transport 2.9.2 enforces its
/// `maxRequestPayloadSize` by resetting the HTTP/2 stream, which the client sees as UNAVAILABLE
/// — a retryable code for a request that can never succeed. So the transport limit is set a
/// little higher (``CustosServer/transportLimit``) as the hard stop, and this interceptor gives
/// the precise answer for everything between.
public struct RequestSizeLimit: ServerInterceptor {
    public let maxBytes: Int

    public init(maxBytes: Int) { self.maxBytes = maxBytes }

    public func intercept<Input: Sendable, Output: Sendable>(
        request: StreamingServerRequest<Input>,
        context: ServerContext,
        next: @Sendable (StreamingServerRequest<Input>, ServerContext) async throws -> StreamingServerResponse<Output>
    ) async throws -> StreamingServerResponse<Output> {
        let limit = maxBytes
        let checked = request.messages.map { message -> Input in
            if let message = message as? any SwiftProtobuf.Message {
                let size = (try message.serializedBytes() as [UInt8]).count
                if size > limit {
                    throw RPCError(code: .resourceExhausted, message: "request message of \(size) bytes exceeds the limit of \(limit) bytes")
                }
            }
            return message
        }
        return try await next(StreamingServerRequest(metadata: request.metadata, messages: RPCAsyncSequence(wrapping: checked)), context)
    }
}

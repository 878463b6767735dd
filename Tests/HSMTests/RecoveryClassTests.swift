@testable import HSM
import PKCS11
import Testing

@Suite("Recovery classes and the waiting line (no HSM)")
struct RecoveryClassTests {
    @Test("Each CK_RV maps to the recovery DESIGN §4 prescribes", arguments: [
        (PKCS11ReturnValue.sessionHandleInvalid, RecoveryClass.sessionFatal),
        (.sessionClosed, .sessionFatal),
        (.userNotLoggedIn, .loginLost),
        (.objectHandleInvalid, .loginLost),
        (.keyHandleInvalid, .loginLost),
        (.deviceRemoved, .device),
        (.deviceError, .device),
        (.tokenNotPresent, .device),
        (.cryptokiNotInitialized, .device),
        (.pinIncorrect, .pin),
        (.pinLocked, .pin),
        (.generalError, .transient),
        (.mechanismInvalid, .caller),
        (.keySizeRange, .caller),
        (.templateIncomplete, .caller),
        (.dataLenRange, .caller),
        (.operationActive, .operationLeftActive),
    ])
    func classification(returnValue: PKCS11ReturnValue, expected: RecoveryClass) {
        #expect(RecoveryClass(returnValue) == expected)
    }

    @Test("The oldest item runs first, whether a task job or a request")
    func ordering() {
        var queue = RequestQueue<String, String>()
        queue.push(request: "r1", now: 10)
        queue.push(job: "j1")
        queue.push(request: "r2", now: 20)
        var order = [String]()
        while let item = queue.popNext() {
            switch item {
            case .job(let job): order.append(job)
            case .request(let request, _): order.append(request)
            }
        }
        #expect(order == ["r1", "j1", "r2"])
        #expect(queue.isEmpty)
    }

    @Test("Requests expire after the timeout; jobs never do")
    func expiry() {
        var queue = RequestQueue<String, String>()
        queue.push(request: "old", now: 100)
        queue.push(job: "job")
        queue.push(request: "new", now: 180)
        #expect(queue.removeExpired(now: 150, timeout: 100).isEmpty)
        let expired = queue.removeExpired(now: 200, timeout: 100)
        #expect(expired.map(\.request) == ["old"])
        #expect(expired.map(\.waited) == [100])
        #expect(queue.waitingRequests == 1)
        let rest = queue.removeExpired(now: 10_000, timeout: 100)
        #expect(rest.map(\.request) == ["new"])
        if case .job(let job) = queue.popNext() { #expect(job == "job") } else { Issue.record("job lost") }
    }

    @Test("The ring buffer keeps FIFO order while it grows")
    func ringBuffer() {
        var buffer = RingBuffer<Int>()
        var expected = [Int]()
        for round in 0..<5 {
            for value in 0..<(37 * (round + 1)) { buffer.append(value); expected.append(value) }
            for _ in 0..<20 { #expect(buffer.removeFirst() == expected.removeFirst()) }
        }
        while !buffer.isEmpty { #expect(buffer.removeFirst() == expected.removeFirst()) }
        #expect(expected.isEmpty)
    }
}

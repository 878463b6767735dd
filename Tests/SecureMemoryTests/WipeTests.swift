import SecureMemory
import Testing

@Suite("wipe: the one memory wipe")
struct WipeTests {
    @Test("zeroes every byte of the buffer and tolerates an empty one")
    func zeroes() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
        wipe(buffer)
        #expect(buffer.allSatisfy { $0 == 0 })
        wipe(UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }
}

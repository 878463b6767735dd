import CustosModel
import RPC
import Testing

/// The protos' enums and the model's, both ways: what the server reads from a request is what
/// the CLI prints back in the model's spelling (`bio-seed`, `active`).
@Suite("Key purposes and states between the wire and the model")
struct WireNameTests {
    @Test("Every purpose survives the wire; UNSPECIFIED and unknown values name none", arguments: KeyPurpose.allCases)
    func purpose(_ purpose: KeyPurpose) {
        #expect(KeyPurpose(wire: purpose.wire) == purpose)
        #expect(KeyPurpose(wire: .unspecified) == nil)
        #expect(KeyPurpose(wire: .UNRECOGNIZED(99)) == nil)
    }

    @Test("Every state survives the wire; UNSPECIFIED and unknown values name none", arguments: KeyState.allCases)
    func state(_ state: KeyState) {
        #expect(KeyState(wire: state.wire) == state)
        #expect(KeyState(wire: .unspecified) == nil)
        #expect(KeyState(wire: .UNRECOGNIZED(99)) == nil)
    }

    @Test("No two model values share a wire value")
    func distinct() {
        #expect(Set(KeyPurpose.allCases.map(\.wire)).count == KeyPurpose.allCases.count)
        #expect(Set(KeyState.allCases.map(\.wire)).count == KeyState.allCases.count)
    }
}

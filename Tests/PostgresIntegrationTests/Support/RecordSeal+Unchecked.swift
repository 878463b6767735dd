import Storage

extension RecordSeal {
    /// A MAC for storage tests that read rows back without comparing them (no MAC check runs
    /// there); any test that verifies or identifies seals through custody.
    static let unchecked = RecordSeal(mac: Array(repeating: 0xA5, count: 32), macVersion: 1)
}

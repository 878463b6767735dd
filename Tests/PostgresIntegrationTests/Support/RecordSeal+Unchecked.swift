import Storage

extension RecordSeal {
    /// A MAC for storage tests that read rows back without comparing them (no MAC check runs
    /// there); any test that verifies or identifies seals through custody. A new one each time:
    /// the table refuses a MAC a replaced or deleted row carried (migration 34).
    static var unchecked: RecordSeal { RecordSeal(mac: (0..<32).map { _ in UInt8.random(in: 0...255) }, macVersion: 1) }
}

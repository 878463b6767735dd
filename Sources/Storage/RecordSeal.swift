import Foundation

/// A row's HSM MAC under the root MAC key of `macVersion` (migration 33): a template's over its
/// tenant, subject reference, biometric version and token; a session's over its consent and
/// outcome (``SessionRecord``). Custody computes and checks it; storage only carries it.
public struct RecordSeal: Sendable, Hashable {
    public let mac: [UInt8]
    public let macVersion: Int

    public init(mac: [UInt8], macVersion: Int) {
        self.mac = mac
        self.macVersion = macVersion
    }

    /// The seal of a row's two columns; `nil` when either is NULL (the table's check keeps
    /// them NULL together).
    init?(mac: Data?, macVersion: Int?) {
        guard let mac, let macVersion else { return nil }
        self.init(mac: Array(mac), macVersion: macVersion)
    }
}

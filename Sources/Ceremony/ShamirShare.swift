public import SecureMemory

/// One point of a Shamir split: x = ``index`` (1…255), y = ``value`` (one byte per secret byte).
public struct ShamirShare: Sendable, CustomStringConvertible {
    public let index: UInt8
    public let value: SecretBytes

    public init(index: UInt8, value: SecretBytes) {
        self.index = index
        self.value = value
    }

    public var description: String { "ShamirShare(index: \(index), <redacted \(value.count) bytes>)" }
}

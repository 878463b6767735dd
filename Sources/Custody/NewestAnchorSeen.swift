import Synchronization

/// The newest MAC-valid value of a replicated token anchor (the audit anchor, the list of key
/// states) this process has read or written, with its sequence number.
///
/// With replica tokens a reader takes the newest value of the tokens that answer. When the token
/// that holds the newest value does not answer and another holds an older one — it was out of
/// service during audit appends, or it came back restored from shares or from an older backup —
/// the tokens alone would take the anchor back. This process saw the newer value, and no database
/// writer or token restore can take it out of memory: readers never go back past it.
final class NewestAnchorSeen<Value: Sendable>: Sendable {
    private let newest = Mutex<(seq: Int64, value: Value)?>(nil)

    /// The newest value seen, if any.
    var current: (seq: Int64, value: Value)? { newest.withLock { $0 } }

    /// Keeps `value` if it is newer than the one held.
    func raise(seq: Int64, value: Value) {
        newest.withLock { newest in
            if seq > newest?.seq ?? Int64.min { newest = (seq, value) }
        }
    }

    /// Takes what every token said as the newest, even if older (an officer reset the anchor
    /// on purpose, in another process).
    func replace(seq: Int64, value: Value) {
        newest.withLock { $0 = (seq, value) }
    }

    /// Forgets the value (an officer dropped the anchor on purpose).
    func forget() {
        newest.withLock { $0 = nil }
    }
}

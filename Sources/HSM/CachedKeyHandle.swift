import PKCS11
import Synchronization

/// One resolved key handle, shared by the pool's cache and the workers' own caches.
///
/// A handle that names a session object the resolver created (an unwrapped tenant key) is
/// *evictable*: the cache may destroy its object to stay within its bound. A call pins the
/// handle for as long as its body runs (``acquire(stamp:)`` … ``release()``), and the cache
/// evicts only a handle nobody pins, in one atomic step that also stops new pins
/// (``evictIfIdle()``): so `C_DestroyObject` never runs on an object a call is using (SoftHSM
/// crashes or answers `CKR_OBJECT_HANDLE_INVALID` then, DESIGN §4), and a call that finds its
/// handle evicted resolves the key again (a fresh unwrap) instead of failing.
///
/// A handle to a token object (root KEKs, the audit MAC key, Ed25519 webhook keys: found, not
/// created) is permanent: never counted against the bound, never destroyed, never refcounted.
final class CachedKeyHandle: Sendable {
    let id: String
    let handle: ObjectHandle
    /// The pool generation it was resolved in; worthless in any other.
    let generation: UInt64
    let evictable: Bool
    /// Calls using the handle now, plus ``evictedFlag`` once evicted (then no call may start).
    private let state: Atomic<UInt64>
    /// The pool's use clock at the last pin: the least recently used handle has the smallest.
    let lastUse: Atomic<UInt64>

    private static let evictedFlag: UInt64 = 1 << 63

    /// A handle its resolving call already holds (one user), last used at `stamp`.
    init(id: String, handle: ObjectHandle, generation: UInt64, evictable: Bool, stamp: UInt64) {
        self.id = id
        self.handle = handle
        self.generation = generation
        self.evictable = evictable
        state = Atomic(evictable ? 1 : 0)
        lastUse = Atomic(stamp)
    }

    /// Pins the handle for one call; `false` once it is evicted (resolve the key again).
    @inline(__always)
    func acquire(stamp: @autoclosure () -> UInt64) -> Bool {
        guard evictable else { return true }
        var current = state.load(ordering: .relaxed)
        while true {
            if current & Self.evictedFlag != 0 { return false }
            let (exchanged, original) = state.compareExchange(
                expected: current, desired: current + 1, successOrdering: .acquiring, failureOrdering: .relaxed
            )
            if exchanged { break }
            current = original
        }
        lastUse.store(stamp(), ordering: .relaxed)
        return true
    }

    /// Ends one call's pin.
    @inline(__always)
    func release() {
        guard evictable else { return }
        state.wrappingSubtract(1, ordering: .releasing)
    }

    /// Marks the handle evicted if no call pins it, so none can start: the caller then owns
    /// the object and destroys it. `false` while a call uses it.
    func evictIfIdle() -> Bool {
        guard evictable else { return false }
        return state.compareExchange(expected: 0, desired: Self.evictedFlag, ordering: .acquiringAndReleasing).exchanged
    }
}

/// The pool's resolved key handles: evictable ones (session objects the pool created, e.g.
/// unwrapped tenant keys) bounded by `limit` and evicted least recently used first; permanent
/// ones (token objects found by label) unbounded and never evicted.
///
/// A value kept under the pool's lock; eviction only picks victims and marks them evicted
/// (``CachedKeyHandle/evictIfIdle()``) — the pool destroys their objects in its persistent
/// session. Recency comes from the handles' `lastUse` stamps, which calls set without this
/// lock; the heap orders handles by the stamp seen when they were pushed and re-pushes a handle
/// whose stamp moved on, so the handle evicted is exactly the one used longest ago among
/// those no call pins.
struct KeyHandleCache {
    let limit: Int
    /// The generation every handle here belongs to; a new one empties the cache.
    private(set) var generation: UInt64 = 0
    private var handles = [String: CachedKeyHandle]()
    private var recency = RecencyHeap()
    /// Evictable handles held, i.e. session objects the cache owns on the token.
    private(set) var sessionObjects = 0

    init(limit: Int) {
        self.limit = limit
    }

    var count: Int { handles.count }

    func handle(_ id: String, generation: UInt64) -> CachedKeyHandle? {
        guard let cached = handles[id], cached.generation == generation else { return nil }
        return cached
    }

    /// Forgets every handle of an older generation without destroying anything: a re-login or
    /// re-initialisation already took their session objects, and their numbers may be reused.
    mutating func enter(generation: UInt64) {
        guard generation != self.generation else { return }
        self.generation = generation
        handles.removeAll()
        recency = RecencyHeap()
        sessionObjects = 0
    }

    /// Evicts least recently used idle handles until one more session object fits, and returns
    /// them (their objects are the caller's to destroy). When every held handle is pinned by a
    /// running call the cache stays over its bound until a later call makes room.
    mutating func makeRoom() -> [CachedKeyHandle] {
        var victims = [CachedKeyHandle]()
        var busy = [RecencyHeap.Item]()
        while sessionObjects + 1 > limit, let item = recency.popOldest() {
            let used = item.handle.lastUse.load(ordering: .relaxed)
            if handles[item.handle.id] !== item.handle {
                // Evicted by name (``evict(_:)``) since it was pushed: dropped here.
                continue
            } else if used != item.stamp {
                recency.push(.init(stamp: used, handle: item.handle))
            } else if item.handle.evictIfIdle() {
                handles.removeValue(forKey: item.handle.id)
                sessionObjects -= 1
                victims.append(item.handle)
            } else {
                busy.append(item)
            }
        }
        for item in busy { recency.push(item) }
        return victims
    }

    /// Evicts the handle of `id` if it is a session object no call pins, and returns it (its
    /// object is the caller's to destroy). Its heap entry goes at the next ``makeRoom()``.
    mutating func evict(_ id: String) -> CachedKeyHandle? {
        guard let cached = handles[id], cached.evictIfIdle() else { return nil }
        handles.removeValue(forKey: id)
        sessionObjects -= 1
        return cached
    }

    mutating func insert(_ handle: CachedKeyHandle) {
        precondition(handle.generation == generation, "a handle of another generation")
        handles[handle.id] = handle
        guard handle.evictable else { return }
        sessionObjects += 1
        recency.push(.init(stamp: handle.lastUse.load(ordering: .relaxed), handle: handle))
    }
}

/// A binary min-heap of handles by use stamp.
struct RecencyHeap {
    struct Item {
        let stamp: UInt64
        let handle: CachedKeyHandle
    }

    private var items = [Item]()

    mutating func push(_ item: Item) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child].stamp < items[parent].stamp else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func popOldest() -> Item? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let oldest = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1, right = left + 1
            var smallest = parent
            if left < items.count, items[left].stamp < items[smallest].stamp { smallest = left }
            if right < items.count, items[right].stamp < items[smallest].stamp { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return oldest
    }
}

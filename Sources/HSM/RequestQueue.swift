/// The pool's waiting line, as a pure value: what runs next and what has waited too long.
/// Time is passed in, so the ordering and expiry rules are tested without threads or an HSM.
struct RequestQueue<Job, Request> {
    private var jobs = RingBuffer<(sequence: UInt64, job: Job)>()
    private var requests = RingBuffer<(sequence: UInt64, enqueuedAt: UInt64, request: Request)>()
    private var nextSequence: UInt64 = 0

    enum Item {
        case job(Job)
        case request(Request, enqueuedAt: UInt64)
    }

    var isEmpty: Bool { jobs.isEmpty && requests.isEmpty }
    var waitingRequests: Int { requests.count }

    /// A task's continuation that prefers the pool's executor. Jobs never expire: a task
    /// must always run.
    mutating func push(job: Job) {
        jobs.append((nextSequence, job))
        nextSequence &+= 1
    }

    mutating func push(request: Request, now: UInt64) {
        requests.append((nextSequence, now, request))
        nextSequence &+= 1
    }

    /// The oldest item of either kind, so neither starves the other.
    mutating func popNext() -> Item? {
        switch (jobs.first, requests.first) {
        case (nil, nil): return nil
        case (.some, nil): return .job(jobs.removeFirst().job)
        case (nil, .some): let entry = requests.removeFirst(); return .request(entry.request, enqueuedAt: entry.enqueuedAt)
        case (.some(let job), .some(let request)):
            if job.sequence < request.sequence { return .job(jobs.removeFirst().job) }
            let entry = requests.removeFirst()
            return .request(entry.request, enqueuedAt: entry.enqueuedAt)
        }
    }

    /// Removes and returns the requests enqueued at or before `now - timeout`. Requests are in
    /// arrival order and share one timeout, so expired ones are always at the front.
    mutating func removeExpired(now: UInt64, timeout: UInt64) -> [(request: Request, waited: UInt64)] {
        var expired = [(request: Request, waited: UInt64)]()
        while let first = requests.first, now >= first.enqueuedAt, now - first.enqueuedAt >= timeout {
            let entry = requests.removeFirst()
            expired.append((entry.request, now - entry.enqueuedAt))
        }
        return expired
    }

    /// Everything still waiting, for shutdown.
    mutating func removeAllRequests() -> [Request] {
        var all = [Request]()
        while !requests.isEmpty { all.append(requests.removeFirst().request) }
        return all
    }
}

/// A growable FIFO ring buffer (the standard library has no deque).
struct RingBuffer<Element> {
    private var storage: [Element?] = Array(repeating: nil, count: 16)
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }
    var first: Element? { count == 0 ? nil : storage[head] }

    mutating func append(_ element: Element) {
        if count == storage.count { grow() }
        storage[(head + count) % storage.count] = element
        count += 1
    }

    mutating func removeFirst() -> Element {
        precondition(count > 0, "removeFirst on an empty ring buffer")
        let element = storage[head]!
        storage[head] = nil
        head = (head + 1) % storage.count
        count -= 1
        return element
    }

    private mutating func grow() {
        var larger = [Element?](repeating: nil, count: storage.count * 2)
        for index in 0..<count { larger[index] = storage[(head + index) % storage.count] }
        storage = larger
        head = 0
    }
}

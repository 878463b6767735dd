// The pool and the database as swift-service-lifecycle services. Both are started before the
// group runs (a command needs a logged-in pool and a running client before its first call, and
// start-up errors must reach it as they are); the services own the orderly shutdown: the group
// shuts its services down in reverse order, so the listeners and servers added after these two
// stop first, then the database, then the pool.
import HSM
import ServiceLifecycle
import Storage

/// Holds a started pool until the group shuts down, then closes its sessions.
struct SessionPoolService: Service {
    let pool: SessionPool

    func run() async throws {
        // Cancellation (the group cancelled) ends the wait as a graceful shutdown does.
        try? await gracefulShutdown()
        await pool.shutdown()
    }
}

/// Holds a started database client until the group shuts down, then closes its connections.
struct DatabaseService: Service {
    let database: Database

    func run() async throws {
        try? await gracefulShutdown()
        await database.shutdown()
    }
}

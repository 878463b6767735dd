public import Custody
public import CustosModel
import Foundation
public import GRPCCore
import SecureMemory
public import Storage
import Synchronization

/// Decides who is calling (DESIGN §10). TLS has already verified the client certificate against
/// the Custos CA; this reads its role, refuses revoked serials, and scopes tenant-facing calls
/// to one tenant — the API key's, or the one the `custos-tenant` metadata names among those the
/// front-end certificate allows (or its only one).
public final class Authenticator: Sendable {
    /// Which API-key scope each tenant-facing service needs.
    public static let scopes: [String: String] = [
        "custos.v1.Verification": "verification",
        "custos.v1.Webhooks": "webhooks",
        "custos.v1.APIKeys": "keys",
    ]
    public static let adminService = "custos.v1.Admin"
    public static let healthService = "grpc.health.v1.Health"
    public static let tenantMetadataKey = "custos-tenant"

    let apiKeys: APIKeyService
    let database: Database
    /// Tells this instance about revocations and tenant status changes made by any instance.
    let changes: CacheChangeListener
    /// How long the deny-list and tenant statuses are reused while ``changes`` listens (at most
    /// ``CacheChangeListener/unlistenedLifetime`` while it does not).
    let cacheLifetime: Duration
    private let revoked = Mutex<(serials: Set<String>, until: ContinuousClock.Instant)?>(nil)
    private let tenants = Mutex([TenantID: (active: Bool, until: ContinuousClock.Instant)]())
    /// Bumped by the invalidations below (the listener's own counts notices): a caller after one
    /// never joins a read begun before it.
    private let generation = Atomic<UInt64>(0)
    /// One read per expired entry, however many callers find it expired at once.
    private let revocationRefreshes = SingleFlight<String, Set<String>>()
    /// Calls that end when their certificate is revoked (health `Watch` streams), told each
    /// time the deny-list may have changed (``waitUntilRevoked(_:)``).
    private let revocationWaiters = Mutex((next: UInt64(0), waiting: [UInt64: AsyncStream<Void>.Continuation]()))
    private let tenantRefreshes = SingleFlight<String, Bool?>()
    /// One warning a minute per refused pepper version, however often its keys are presented.
    private let unusableKeyWarnings = RepeatedWarningLimit()

    public init(apiKeys: APIKeyService, database: Database, changes: CacheChangeListener, cacheLifetime: Duration = .seconds(2)) {
        self.apiKeys = apiKeys
        self.database = database
        self.changes = changes
        self.cacheLifetime = cacheLifetime
        changes.subscribe { [weak self] change in self?.forget(change) }
    }

    /// Forgets what another instance's (or this one's) change makes stale; `nil`: everything.
    func forget(_ change: CacheChange?) {
        switch change {
        case .certificateRevocations:
            revoked.withLock { $0 = nil }
            revocationsChanged()
        case .tenantStatus(let tenant): _ = tenants.withLock { $0.removeValue(forKey: tenant) }
        case .tenantPolicy: break
        case nil:
            // The listener reconnected (notices may be lost): everything is read again.
            revoked.withLock { $0 = nil }
            tenants.withLock { $0.removeAll() }
            revocationsChanged()
        }
    }

    /// - Throws: `RPCError` UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND or INVALID_ARGUMENT.
    public func authenticate(service: String, metadata: Metadata, certificate: CallerCertificate?) async throws -> Caller {
        if service == Self.healthService {
            // Health needs no role (balancers and probes ask it), but TLS made the caller present
            // a certificate of the CA: a revoked one is refused here as everywhere, or a revoked
            // front-end kept `Watch` streams open (attack review, round 5). A deny-list that
            // cannot be read lets the probe through: health reports the HSM, and must answer
            // while the database is down.
            if let certificate, (try? await isRevoked(certificate.serial)) == true {
                throw RPCError(code: .unauthenticated, message: "client certificate revoked")
            }
            return Caller(kind: .healthProbe)
        }
        guard let certificate else {
            throw RPCError(code: .unauthenticated, message: "a client certificate naming a Custos officer or front-end is required")
        }
        if try await isRevoked(certificate.serial) {
            throw RPCError(code: .unauthenticated, message: "client certificate revoked")
        }
        if service == Self.adminService {
            guard case .officer(let name) = certificate.role else {
                throw RPCError(code: .permissionDenied, message: "Admin calls need an officer certificate")
            }
            return Caller(kind: .officer(name: name), certificateSerial: certificate.serial)
        }
        guard let scope = Self.scopes[service] else {
            throw RPCError(code: .unimplemented, message: "unknown service \(service)")
        }
        guard case .frontend(let frontend, let allowance) = certificate.role else {
            throw RPCError(code: .permissionDenied, message: "officer certificates may call Admin only")
        }
        let named = try requestedTenant(metadata)
        if let bearer = try bearerToken(metadata) {
            // Parsed once, for the environment check and the verification.
            guard let parsed = try? APIKeyFormat.parse(bearer) else {
                throw RPCError(code: .unauthenticated, message: "API key not valid")
            }
            try requireEnvironment(parsed)
            let verified: APIKeyService.Verified
            do {
                verified = try await apiKeys.verify(parsed)
            } catch let error as APIKeyError {
                _ = error
                throw RPCError(code: .unauthenticated, message: "API key not valid")
            } catch let error as CustodyError {
                // The pepper version the key's row names is refused by its state (disabled,
                // being destroyed, gone) before the secret could be compared: telling the caller
                // so would describe a key to whoever knows only its public id. Everything else
                // (a tampered row, the HSM or the database) keeps its own status and alarm.
                switch error {
                case .keyDisabled, .keyDestructionScheduled, .keyDestroyed, .unknownKeyVersion:
                    throw APIKeyUnusable(cause: error, suppressedBefore: unusableKeyWarnings.admit("\(error)"))
                default: throw error
                }
            }
            if let named, named != verified.tenant {
                throw RPCError(code: .permissionDenied, message: "the API key belongs to another tenant than \(Self.tenantMetadataKey) names")
            }
            // The certificate is the front-end's own credential: a key of a tenant it may not
            // serve does not widen it (a front-end's leaked or misrouted key is not a pass).
            guard allowance.allows(verified.tenant) else {
                throw RPCError(code: .permissionDenied, message: "this certificate may not act for the API key's tenant \(verified.tenant)")
            }
            guard verified.scopes.contains(scope) else {
                throw RPCError(code: .permissionDenied, message: "the API key lacks the '\(scope)' scope")
            }
            return Caller(kind: .tenant(verified.tenant, via: .apiKey(keyID: verified.keyID, scopes: verified.scopes)))
        }
        guard let tenant = named ?? allowance.single else {
            throw RPCError(code: .invalidArgument, message: "name the tenant in the \(Self.tenantMetadataKey) metadata (this certificate serves several)")
        }
        guard allowance.allows(tenant) else {
            throw RPCError(code: .permissionDenied, message: "this certificate may not act for tenant \(tenant)")
        }
        try await requireActive(tenant)
        return Caller(kind: .tenant(tenant, via: .certificate(frontend: frontend)))
    }

    /// Where an RPC's task should start: for a call with an API key that needs an HMAC in the
    /// HSM, the HSM pool's executor (the HMAC then runs inline on the worker); `nil` (the
    /// current thread, no hop) otherwise — also for a key the HSM confirmed moments ago
    /// (``APIKeyService/isRecentlyVerified(bearer:)``), whose verification needs no HMAC.
    func preferredExecutor(for metadata: Metadata) -> (any TaskExecutor)? {
        guard let value = metadata[stringValues: "authorization"].first(where: { _ in true }) else { return nil }
        guard value.hasPrefix("Bearer "), !apiKeys.isRecentlyVerified(bearer: value.utf8.dropFirst(7)) else { return nil }
        return apiKeys.hsmExecutor
    }

    /// A key issued for another environment (`custos_test_…` at a `live` server, or the
    /// reverse) is refused before any database or HSM call, with a message that says why: a
    /// test key must never work in production, and a clear refusal saves a support ticket.
    func requireEnvironment(_ parsed: ParsedAPIKey) throws {
        guard parsed.environment != apiKeys.environment else { return }
        throw RPCError(
            code: .unauthenticated,
            message: "API key is for the '\(parsed.environment)' environment; this server serves '\(apiKeys.environment)'"
        )
    }

    /// The one value of `key`, nil without one. Sent twice, a value is refused rather than the
    /// first taken (helper-91): a proxy in front that checks the last would see another tenant
    /// or key than Custos.
    func single(_ key: String, in metadata: Metadata, refusedWith code: RPCError.Code) throws -> String? {
        var values = metadata[stringValues: key].makeIterator()
        guard let value = values.next() else { return nil }
        guard values.next() == nil else { throw RPCError(code: code, message: "\(key) metadata given more than once") }
        return value
    }

    func requestedTenant(_ metadata: Metadata) throws -> TenantID? {
        guard let text = try single(Self.tenantMetadataKey, in: metadata, refusedWith: .invalidArgument) else { return nil }
        do {
            return try TenantID.parse(text)
        } catch {
            throw RPCError(code: .invalidArgument, message: "\(Self.tenantMetadataKey) is \(error)")
        }
    }

    func bearerToken(_ metadata: Metadata) throws -> SecretBytes? {
        guard let value = try single("authorization", in: metadata, refusedWith: .unauthenticated) else { return nil }
        guard value.hasPrefix("Bearer "), value.utf8.count > 7 else {
            throw RPCError(code: .unauthenticated, message: "authorization must be 'Bearer <API key>'")
        }
        return SecretBytes(value.utf8.dropFirst(7))
    }

    func requireActive(_ tenant: TenantID) async throws {
        let now = ContinuousClock.now
        let active: Bool
        if let cached = tenants.withLock({ $0[tenant] }), cached.until > now {
            active = cached.active
        } else {
            let stamp = cacheStamp
            let found = try await tenantRefreshes.run("\(tenant.rawValue)#\(stamp)") {
                var found = try await TenantStore(self.database).get(tenant).map { $0.status == "active" }
                // The HSM's list too: the row alone could be set back by the database's writer.
                if found == true, try await self.apiKeys.keyring.isTenantDisabled(tenant) { found = false }
                // A change announced while this read ran may not be in it: use it, do not keep it.
                // Checked under the lock `forget` takes after each bump, or a notice between the
                // check and the store would leave the old status cached for its whole lifetime.
                if let found {
                    self.tenants.withLock { tenants in
                        if self.cacheStamp == stamp { tenants[tenant] = (found, now + self.changes.lifetime(self.cacheLifetime)) }
                    }
                }
                return found
            }
            guard let found else { throw RPCError(code: .notFound, message: "unknown tenant \(tenant)") }
            active = found
        }
        guard active else { throw RPCError(code: .permissionDenied, message: "tenant \(tenant) is disabled") }
    }

    func isRevoked(_ serial: String) async throws -> Bool {
        let now = ContinuousClock.now
        if let cached = revoked.withLock({ $0 }), cached.until > now { return cached.serials.contains(serial) }
        let stamp = cacheStamp
        let serials = try await revocationRefreshes.run(stamp) {
            let serials = try await self.database.withTransaction(context: "read revoked certificates") { connection in
                try await CertificateRevocationStore.all(on: connection)
            }
            // Checked under the lock `forget` takes after each bump (see requireActive).
            self.revoked.withLock { revoked in
                if self.cacheStamp == stamp { revoked = (serials, now + self.changes.lifetime(self.cacheLifetime)) }
            }
            return serials
        }
        return serials.contains(serial)
    }

    /// Which changes a read has seen: this instance's invalidations and the notices of all.
    private var cacheStamp: String { "\(generation.load(ordering: .acquiring)).\(changes.generation)" }

    /// Forgets cached revocations (after this instance revoked a certificate, before its own
    /// notice arrives). Other instances forget theirs on the notice (``CacheChange``).
    public func invalidateRevocations() {
        generation.add(1, ordering: .acquiringAndReleasing)
        revoked.withLock { $0 = nil }
        revocationsChanged()
    }

    /// Returns once the certificate `serial` is found revoked — looked up at once (a revocation
    /// between the call's authentication and this wait), then after each revocation here or
    /// another instance's notice (``CacheChange/certificateRevocations``), and after the
    /// listener reconnects. A deny-list that cannot be read counts as "not revoked" for now, as
    /// for health's own authentication, and is read again a second later. Authentication refuses a revoked certificate at a call's
    /// start; this ends a call that outlives that moment (health `Watch`: attack review, round 5).
    /// - Returns: true when revoked; false when the task was cancelled first.
    public func waitUntilRevoked(_ serial: String) async -> Bool {
        let (changes, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = revocationWaiters.withLock { state in
            state.next += 1
            state.waiting[state.next] = continuation
            return state.next
        }
        defer { revocationWaiters.withLock { $0.waiting.removeValue(forKey: id) }?.finish() }
        continuation.yield()
        // The stream ends (nil) when the task is cancelled.
        for await _ in changes {
            do {
                if try await isRevoked(serial) { return true }
            } catch {
                // The deny-list could not be read (the call goes on, as health's authentication
                // would let it start): look again in a second rather than only at the next
                // notice, which may come weeks later (attack review, session 12).
                Task {
                    try? await Task.sleep(for: .seconds(1))
                    continuation.yield()
                }
            }
        }
        return false
    }

    /// Tells every ``waitUntilRevoked(_:)`` to look again.
    private func revocationsChanged() {
        revocationWaiters.withLock { state in
            for waiter in state.waiting.values { waiter.yield() }
        }
    }

    /// Forgets a tenant's cached status (after this instance disabled it, before its own notice
    /// arrives). Other instances forget theirs on the notice (``CacheChange``).
    public func invalidateTenant(_ tenant: TenantID) {
        generation.add(1, ordering: .acquiringAndReleasing)
        _ = tenants.withLock { $0.removeValue(forKey: tenant) }
    }
}

/// A well-formed API key whose verification the key hierarchy refused by its pepper version's
/// state (disabled, scheduled for destruction, destroyed) before its secret was compared: the
/// caller hears "API key not valid"; the cause goes to the log for officers, once a minute per
/// cause (``RepeatedWarningLimit``).
struct APIKeyUnusable: Error {
    let cause: CustodyError
    /// `nil`: a line for this cause went out within the minute, log nothing; otherwise how many
    /// were held back since the last one.
    let suppressedBefore: Int?
}

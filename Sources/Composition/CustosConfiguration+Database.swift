import Custody
import Foundation
import HSM
public import Storage

/// The PostgreSQL role a runtime connects as: the service role for everything the service does,
/// the schema owner only for migrations.
public enum DatabaseRole: Sendable {
    case owner, service
}

extension CustosConfiguration {
    /// The owner role's name when the configuration does not give one.
    public static let defaultOwnerUser = "custos_owner"
    /// The schema when the configuration does not give one.
    public static let defaultSchema = "custos"
    /// The service role migrations grant to when the configuration has no postgres section.
    public static let defaultServiceUser = "custos_service"

    /// - Throws: ``ConfigurationError`` (no postgres section, no password file for the role),
    ///   ``HSMError`` when the password file breaks the PIN-file rules.
    public func databaseConfiguration(role: DatabaseRole) throws -> DatabaseConfiguration {
        guard let postgres else { throw ConfigurationError.invalid(path: source, reason: "no postgres section") }
        let user = role == .owner ? (postgres.ownerUser ?? Self.defaultOwnerUser) : postgres.user
        let passwordFile = role == .owner ? postgres.ownerPasswordFile : postgres.passwordFile
        guard let passwordFile else { throw ConfigurationError.invalid(path: source, reason: "no password file for \(user)") }
        // The same 0600 rules as PINs.
        let password = try PINSource.file(path: passwordFile).read().withUnsafeBytes { String(decoding: $0, as: UTF8.self) }
        // Carrying out a key destruction holds one connection while it waits for a second, by
        // design (its request row stays locked while the keyring writes; see
        // Database.withNestingTransaction). With one it would wait for itself until the
        // operation timeout.
        if let connections = postgres.maximumConnections, connections < 2 {
            throw ConfigurationError.invalid(path: source, reason: "postgres.maximumConnections must be at least 2")
        }
        return DatabaseConfiguration(
            socketDirectory: postgres.socketDirectory, port: postgres.port, database: postgres.database,
            username: user, password: password, schema: postgres.schema ?? Self.defaultSchema,
            maximumConnections: postgres.maximumConnections ?? DatabaseConfiguration.defaultMaximumConnections
        )
    }

    /// The role that migrations grant the service's privileges to.
    public var serviceUser: String { postgres?.user ?? Self.defaultServiceUser }

    /// The audit head anchor lives beside config.json, outside PostgreSQL.
    public var auditAnchorPath: String {
        URL(fileURLWithPath: source).deletingLastPathComponent().appendingPathComponent("audit-anchor.log").path
    }

    /// `live` or `test`: the `<env>` part of issued API keys.
    public var environment: String { keyEnvironment ?? "live" }

    /// How often counted key uses are written to the audit log (``keyUseFlushSeconds``, at
    /// least 1 s; default 10 s).
    public var keyUseFlushInterval: Duration { .seconds(max(1, keyUseFlushSeconds ?? 10)) }

    /// How long an API key the HSM confirmed is accepted again without an HMAC
    /// (``apiKeyVerifiedSeconds``, at most 60 s; default 5 s; 0 turns it off).
    public var apiKeyVerifiedLifetime: Duration {
        apiKeyVerifiedSeconds.map { .seconds(min(max(0, $0), 60)) } ?? APIKeyService.defaultVerifiedLifetime
    }
}

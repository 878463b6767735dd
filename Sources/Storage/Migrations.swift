import Foundation
public import Logging
import PostgresNIO

/// Versioned schema migrations, applied in order by the schema owner, each in its own
/// transaction, recorded in `schema_migrations`. Run at start-up and by `custos db migrate`.
public enum Migrations {
    struct Migration {
        let version: Int
        let summary: String
        /// SQL with `{schema}` and `{service}` placeholders (DDL takes no bind parameters; both
        /// are validated identifiers).
        let sql: String
    }

    static let all: [Migration] = [
        Migration(version: 1, summary: "tenants, key versions, API keys, audit log; row-level security", sql: """
        CREATE TABLE tenants (
            id uuid PRIMARY KEY,
            label text NOT NULL UNIQUE CHECK (label ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
            status text NOT NULL CHECK (status IN ('active', 'disabled')),
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE key_versions (
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            purpose text NOT NULL,
            version integer NOT NULL CHECK (version > 0),
            state text NOT NULL CHECK (state IN ('pending', 'active', 'retiring', 'retired', 'destroyed')),
            wrapped_key bytea,
            wrap_mechanism text NOT NULL,
            root_kek_version integer NOT NULL,
            check_value bytea NOT NULL,
            public_key bytea,
            token_label text,
            row_mac bytea NOT NULL,
            retiring_until timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            activated_at timestamptz,
            retired_at timestamptz,
            destroyed_at timestamptz,
            PRIMARY KEY (tenant_id, purpose, version),
            CHECK (state = 'destroyed' OR wrapped_key IS NOT NULL OR token_label IS NOT NULL)
        );
        -- Exactly one active version per (tenant, purpose), enforced by the database itself.
        CREATE UNIQUE INDEX key_versions_one_active ON key_versions (tenant_id, purpose) WHERE state = 'active';

        -- Non-secret index of rotations in progress, so start-up reconciliation finds them
        -- without reading across tenants under row-level security.
        CREATE TABLE pending_rotations (
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            purpose text NOT NULL,
            version integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, purpose)
        );

        -- Non-secret index: an API key's public id names its tenant before the tenant is known.
        CREATE TABLE api_key_index (
            key_id text PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id)
        );

        CREATE TABLE api_keys (
            key_id text PRIMARY KEY REFERENCES api_key_index (key_id),
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            hash bytea NOT NULL,
            pepper_version integer NOT NULL,
            scopes text[] NOT NULL,
            label text NOT NULL DEFAULT '',
            expires_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz,
            revoked_at timestamptz
        );

        -- Append-only: the service role may insert and read, never update or delete.
        CREATE TABLE audit_log (
            seq bigint PRIMARY KEY CHECK (seq > 0),
            at timestamptz NOT NULL,
            tenant_id uuid,
            actor text NOT NULL,
            action text NOT NULL,
            target text NOT NULL,
            details text NOT NULL,
            previous_hash bytea NOT NULL,
            entry_hash bytea NOT NULL,
            mac bytea NOT NULL,
            mac_key_version integer NOT NULL
        );

        ALTER TABLE key_versions ENABLE ROW LEVEL SECURITY;
        ALTER TABLE key_versions FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON key_versions
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
        -- Only a rotation that never completed may be deleted; every other version is kept.
        CREATE POLICY only_pending_deleted ON key_versions AS RESTRICTIVE FOR DELETE USING (state = 'pending');

        ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
        ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON api_keys
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        GRANT USAGE ON SCHEMA {schema} TO {service};
        GRANT SELECT, INSERT ON tenants TO {service};
        GRANT UPDATE (status) ON tenants TO {service};
        GRANT SELECT, INSERT, DELETE ON key_versions TO {service};
        GRANT UPDATE (state, row_mac, retiring_until, activated_at, retired_at, destroyed_at, wrapped_key, token_label) ON key_versions TO {service};
        GRANT SELECT, INSERT, DELETE ON pending_rotations TO {service};
        GRANT SELECT, INSERT ON api_key_index TO {service};
        GRANT SELECT, INSERT ON api_keys TO {service};
        GRANT UPDATE (hash, pepper_version, last_used_at, revoked_at) ON api_keys TO {service};
        GRANT SELECT, INSERT ON audit_log TO {service};
        """),
        Migration(version: 2, summary: "biometric templates (tokens only), row-level security", sql: """
        CREATE TABLE templates (
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            subject_ref text NOT NULL,
            key_version integer NOT NULL,
            token bytea NOT NULL CHECK (length(token) = 4096),
            enrolled_at timestamptz NOT NULL DEFAULT now(),
            last_used_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, subject_ref, key_version)
        );

        ALTER TABLE templates ENABLE ROW LEVEL SECURITY;
        ALTER TABLE templates FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON templates
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        GRANT SELECT, INSERT, DELETE ON templates TO {service};
        GRANT UPDATE (token, enrolled_at, last_used_at) ON templates TO {service};
        """),
        // Version 3 is another change's; versions need not be applied in number order.
        Migration(version: 4, summary: "root-KEK rotation may re-point key versions at the new root KEK", sql: """
        GRANT UPDATE (root_kek_version) ON key_versions TO {service};
        """),
    ]

    /// The newest schema version this build knows.
    public static var latestVersion: Int { all.map(\.version).max() ?? 0 }

    /// Applies every migration not yet recorded, as the schema owner. Serialised across
    /// processes by an advisory lock, so two instances starting together do not race.
    /// - Parameters:
    ///   - database: connected as the owner role.
    ///   - serviceRole: the non-owner role the service connects as (granted access, never ownership).
    /// - Returns: the versions applied now.
    /// - Throws: ``StorageError``.
    @discardableResult
    public static func migrate(_ database: Database, serviceRole: String, logger: Logger) async throws -> [Int] {
        guard serviceRole.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }) else {
            throw StorageError.configuration("service role must be a plain lower-case identifier")
        }
        let schema = database.schema
        return try await database.withTransaction(context: "migrate") { connection in
            // One lock per schema: instances migrating the same schema wait for each other.
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext(\("custos-migrations:" + schema)))", logger: logger)
            try await connection.query("CREATE SCHEMA IF NOT EXISTS \(unescaped: schema)", logger: logger)
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS \(unescaped: schema).schema_migrations (
                    version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query("SELECT version FROM \(unescaped: schema).schema_migrations", logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            var now = [Int]()
            for migration in all where !applied.contains(migration.version) {
                let sql = migration.sql
                    .replacingOccurrences(of: "{schema}", with: schema)
                    .replacingOccurrences(of: "{service}", with: serviceRole)
                try await connection.query("SET LOCAL search_path TO \(unescaped: schema)", logger: logger)
                for statement in splitStatements(sql) {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO \(unescaped: schema).schema_migrations (version) VALUES (\(migration.version))", logger: logger)
                now.append(migration.version)
                logger.info("applied migration", metadata: ["version": "\(migration.version)", "summary": "\(migration.summary)"])
            }
            return now
        }
    }

    /// Splits on `;` at line ends; the migrations contain no `;` inside literals or bodies.
    static func splitStatements(_ sql: String) -> [String] {
        sql.components(separatedBy: ";\n")
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }
            .map { statement in
                statement.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }.joined(separator: "\n")
            }
            .filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
    }
}

import Foundation
public import Logging
import PostgresNIO

/// Versioned schema migrations, applied in order by the schema owner, each in its own
/// transaction, recorded in `schema_migrations`. Applied by `custos db migrate` (scripts/setup
/// runs it); the service, which connects as a role that owns nothing, only checks at start-up
/// that the schema is at least this build's (``requireCurrent(_:)``).
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
        Migration(version: 3, summary: "tenant policies, verification sessions, gateway links; subject references record their pii version", sql: """
        -- Per-tenant decision thresholds, retention and tokenization budget (defaults in code
        -- apply while a tenant has no row).
        CREATE TABLE tenant_policies (
            tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
            green_threshold double precision NOT NULL,
            amber_threshold double precision NOT NULL,
            retention_days integer NOT NULL CHECK (retention_days BETWEEN 1 AND 3650),
            tokenizations_per_minute integer NOT NULL CHECK (tokenizations_per_minute BETWEEN 1 AND 1000000),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CHECK (amber_threshold > 0 AND amber_threshold < green_threshold AND green_threshold <= 1)
        );

        -- Which pii key made each reference, so that version is not destroyed while in use.
        ALTER TABLE templates ADD COLUMN pii_version integer NOT NULL DEFAULT 1 CHECK (pii_version > 0);
        ALTER TABLE templates ALTER COLUMN pii_version DROP DEFAULT;
        CREATE INDEX templates_last_used ON templates (tenant_id, last_used_at);

        -- A candidate's verification: name and email only as AES-GCM ciphertext under the
        -- tenant's data key; consent before any features; the outcome written once.
        CREATE TABLE verification_sessions (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            subject_ref text NOT NULL,
            pii_version integer NOT NULL CHECK (pii_version > 0),
            sealed_name bytea,
            sealed_email bytea,
            data_key_version integer,
            expires_at timestamptz NOT NULL,
            link_opened_at timestamptz,
            notice_version text CHECK (length(notice_version) BETWEEN 1 AND 64),
            consented_at timestamptz,
            outcome text CHECK (outcome IN ('enrolled', 'green', 'amber', 'red', 'no_match')),
            confidence text CHECK (confidence IN ('low', 'medium', 'high')),
            biometric_key_version integer,
            completed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK ((sealed_name IS NULL AND sealed_email IS NULL) OR data_key_version IS NOT NULL),
            CHECK (consented_at IS NULL OR link_opened_at IS NOT NULL),
            CHECK (outcome IS NULL OR (consented_at IS NOT NULL AND completed_at IS NOT NULL))
        );
        CREATE INDEX verification_sessions_subject ON verification_sessions (tenant_id, subject_ref);

        -- Non-secret index: a gateway link (only its SHA-256 is stored) names its tenant and
        -- session before the tenant is known. Single use: opened_at is set once.
        CREATE TABLE gateway_links (
            link_hash bytea PRIMARY KEY CHECK (length(link_hash) = 32),
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            session_id uuid NOT NULL REFERENCES verification_sessions (id) ON DELETE CASCADE,
            expires_at timestamptz NOT NULL,
            opened_at timestamptz
        );
        CREATE INDEX gateway_links_session ON gateway_links (session_id);

        ALTER TABLE tenant_policies ENABLE ROW LEVEL SECURITY;
        ALTER TABLE tenant_policies FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON tenant_policies
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        ALTER TABLE verification_sessions ENABLE ROW LEVEL SECURITY;
        ALTER TABLE verification_sessions FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON verification_sessions
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        GRANT SELECT, INSERT, UPDATE ON tenant_policies TO {service};
        GRANT SELECT, INSERT, DELETE ON verification_sessions TO {service};
        GRANT UPDATE (link_opened_at, notice_version, consented_at, outcome, confidence, biometric_key_version, completed_at, sealed_name, sealed_email, data_key_version) ON verification_sessions TO {service};
        GRANT SELECT, INSERT, DELETE ON gateway_links TO {service};
        GRANT UPDATE (opened_at) ON gateway_links TO {service};
        GRANT UPDATE (pii_version) ON templates TO {service};
        """),
        Migration(version: 4, summary: "root-KEK rotation may re-point key versions at the new root KEK", sql: """
        GRANT UPDATE (root_kek_version) ON key_versions TO {service};
        """),
        Migration(version: 5, summary: "two-officer key destruction requests; revoked officer certificates", sql: """
        -- Administration data, not tenant data: officers act across tenants, so no row-level
        -- security; nothing secret in either table.
        CREATE TABLE destruction_requests (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            purpose text NOT NULL,
            version integer NOT NULL CHECK (version > 0),
            requested_by text NOT NULL,
            requested_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            approved_by text,
            approved_at timestamptz,
            executed_at timestamptz,
            CHECK (approved_by IS NULL OR approved_by <> requested_by),
            CHECK (executed_at IS NULL OR approved_at IS NOT NULL)
        );

        CREATE TABLE revoked_certificates (
            serial text PRIMARY KEY CHECK (serial ~ '^[0-9a-f]{1,64}$'),
            subject text NOT NULL,
            revoked_by text NOT NULL,
            revoked_at timestamptz NOT NULL DEFAULT now()
        );

        GRANT SELECT, INSERT ON destruction_requests TO {service};
        GRANT UPDATE (approved_by, approved_at, executed_at) ON destruction_requests TO {service};
        GRANT SELECT, INSERT ON revoked_certificates TO {service};
        """),
        Migration(version: 6, summary: "check values of the token's root keys, so start-up notices a token that does not match the database", sql: """
        -- Non-secret: labels and 3-byte check values. Written when the ceremony creates, restores
        -- or rotates root keys, and at the first start against a token; never updated.
        CREATE TABLE root_keys (
            label text PRIMARY KEY CHECK (label ~ '^custos/root/'),
            check_value bytea NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        GRANT SELECT, INSERT ON root_keys TO {service};
        """),
        Migration(version: 7, summary: "destruction approvals carry an HSM MAC and the approver's certificate serial", sql: """
        -- Approvals made before this migration have no MAC and no longer count: approve again.
        ALTER TABLE destruction_requests
            ADD COLUMN approver_certificate_serial text CHECK (approver_certificate_serial ~ '^[0-9a-f]{1,64}$'),
            ADD COLUMN approval_mac bytea,
            ADD COLUMN approval_mac_version integer;
        GRANT UPDATE (approver_certificate_serial, approval_mac, approval_mac_version) ON destruction_requests TO {service};
        """),
        Migration(version: 8, summary: "shared tokenization budgets; per-subject verification attempts", sql: """
        -- One token bucket per tenant, shared by every instance: instances lease tokens from it
        -- in blocks (one short transaction per block), so neither a second instance nor a
        -- restart grants a fresh budget. Refills are computed from the database clock.
        CREATE TABLE tokenization_budgets (
            tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
            tokens double precision NOT NULL CHECK (tokens >= 0),
            refilled_at timestamptz NOT NULL,
            refusal_audited_at timestamptz
        );

        -- Verification attempts per subject in a fixed window, counted in the transaction that
        -- records the verification (DESIGN §6: the decision is an oracle; hill-climbing needs
        -- many attempts against one subject).
        CREATE TABLE verification_attempts (
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            subject_ref text NOT NULL,
            window_start timestamptz NOT NULL,
            attempts integer NOT NULL CHECK (attempts >= 0),
            PRIMARY KEY (tenant_id, subject_ref)
        );

        ALTER TABLE tokenization_budgets ENABLE ROW LEVEL SECURITY;
        ALTER TABLE tokenization_budgets FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON tokenization_budgets
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        ALTER TABLE verification_attempts ENABLE ROW LEVEL SECURITY;
        ALTER TABLE verification_attempts FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON verification_attempts
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

        GRANT SELECT, INSERT ON tokenization_budgets TO {service};
        GRANT UPDATE (tokens, refilled_at, refusal_audited_at) ON tokenization_budgets TO {service};
        GRANT SELECT, INSERT, DELETE ON verification_attempts TO {service};
        GRANT UPDATE (window_start, attempts) ON verification_attempts TO {service};
        """),
        Migration(version: 9, summary: "per-tenant overlap of biometric key rotations", sql: """
        -- Days the previous biometric key version keeps matching after a rotation (0: none,
        -- the old templates stop matching at once). Existing tenants get the default.
        ALTER TABLE tenant_policies ADD COLUMN bio_overlap_days integer NOT NULL DEFAULT 30
            CHECK (bio_overlap_days BETWEEN 0 AND 365);
        """),
        Migration(version: 10, summary: "subject references move to the active pii version on lookup", sql: """
        -- A lookup that finds a subject under an older pii version moves its stored references
        -- (templates, sessions) to the active version's reference in the lookup's transaction,
        -- so old pii versions reach zero references and can be destroyed.
        GRANT UPDATE (subject_ref) ON templates TO {service};
        GRANT UPDATE (subject_ref, pii_version) ON verification_sessions TO {service};
        """),
        Migration(version: 11, summary: "disabled key versions; scheduled, cancellable key destruction; tenant offboarding", sql: """
        -- Both covered by the row MAC: set while officers disabled the version, and while an
        -- approved destruction of it is scheduled. Either makes every use refused.
        ALTER TABLE key_versions
            ADD COLUMN disabled_at timestamptz,
            ADD COLUMN destruction_due_at timestamptz;
        GRANT UPDATE (disabled_at, destruction_due_at) ON key_versions TO {service};

        -- A destruction is due waiting_days after its approval (the approval MAC covers it);
        -- NULL for requests made before scheduling existed. Cancelled requests stay, for the record.
        ALTER TABLE destruction_requests
            ADD COLUMN waiting_days integer CHECK (waiting_days BETWEEN 7 AND 30),
            ADD COLUMN cancelled_by text,
            ADD COLUMN cancelled_at timestamptz,
            ADD CONSTRAINT destruction_requests_cancelled_or_executed CHECK (cancelled_at IS NULL OR executed_at IS NULL);
        GRANT UPDATE (cancelled_by, cancelled_at) ON destruction_requests TO {service};

        -- Tenant offboarding by crypto-shredding: the same two-officer approval as a key
        -- destruction (HSM-MAC'd, naming the approver's certificate), for a whole tenant. The
        -- tenant is disabled on approval; once due every key version is destroyed and the
        -- tenant's data rows deleted (the audit log and key metadata stay). Administration data:
        -- no row-level security, nothing secret.
        CREATE TABLE tenant_offboardings (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            requested_by text NOT NULL,
            requested_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            waiting_days integer NOT NULL CHECK (waiting_days BETWEEN 7 AND 30),
            approved_by text,
            approved_at timestamptz,
            approver_certificate_serial text CHECK (approver_certificate_serial ~ '^[0-9a-f]{1,64}$'),
            approval_mac bytea,
            approval_mac_version integer,
            completed_at timestamptz,
            CHECK (approved_by IS NULL OR approved_by <> requested_by),
            CHECK (completed_at IS NULL OR approved_at IS NOT NULL)
        );
        GRANT SELECT, INSERT ON tenant_offboardings TO {service};
        GRANT UPDATE (approved_by, approved_at, approver_certificate_serial, approval_mac, approval_mac_version, completed_at)
            ON tenant_offboardings TO {service};
        -- Offboarding deletes the tenant's rows from these too.
        GRANT DELETE ON api_keys, api_key_index, tenant_policies, tokenization_budgets TO {service};
        """),
        Migration(version: 12, summary: "two-officer early end of a biometric rotation's overlap", sql: """
        -- One officer asks, a different one approves before expires_at; the approval and the end
        -- of the overlap (templates still under the old version dropped, both keys retired)
        -- commit together. Administration data: no row-level security, nothing secret.
        CREATE TABLE overlap_end_requests (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            version integer NOT NULL CHECK (version > 0),
            requested_by text NOT NULL,
            requested_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            approved_by text,
            approved_at timestamptz,
            approver_certificate_serial text CHECK (approver_certificate_serial ~ '^[0-9a-f]{1,64}$'),
            CHECK (approved_by IS NULL OR approved_by <> requested_by)
        );
        GRANT SELECT, INSERT ON overlap_end_requests TO {service};
        GRANT UPDATE (approved_by, approved_at, approver_certificate_serial) ON overlap_end_requests TO {service};
        """),
        Migration(version: 13, summary: "key destruction and tenant offboarding requests carry an HSM MAC from the moment they are recorded", sql: """
        -- Set once, on insert: an approval is refused for a request without a MAC that verifies
        -- (one written, or changed before its approval, by anyone without the HSM).
        ALTER TABLE destruction_requests ADD COLUMN request_mac bytea, ADD COLUMN request_mac_version integer;
        ALTER TABLE tenant_offboardings ADD COLUMN request_mac bytea, ADD COLUMN request_mac_version integer;
        """),
        Migration(version: 14, summary: "token objects of destroyed key versions listed until they are gone from the token", sql: """
        -- Written with a destruction's row, cleared once its token objects (Ed25519 key pairs)
        -- are destroyed: a crash in between leaves this list for start-up reconciliation, not
        -- key material that no row names any more. Labels and ids only.
        CREATE TABLE pending_token_destructions (
            label text PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            purpose text NOT NULL,
            version integer NOT NULL CHECK (version > 0),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        GRANT SELECT, INSERT, DELETE ON pending_token_destructions TO {service};
        """),
        Migration(version: 15, summary: "destroyed key versions listed until the HSM's destruction anchor holds them", sql: """
        -- Written with a destruction's row, cleared once the version is in the token's list of
        -- destroyed versions (the anchor a replayed row cannot pass): a crash in between leaves
        -- this list for start-up reconciliation. Ids only.
        CREATE TABLE pending_destruction_anchors (
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            purpose text NOT NULL,
            version integer NOT NULL CHECK (version > 0),
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, purpose, version)
        );
        GRANT SELECT, INSERT, DELETE ON pending_destruction_anchors TO {service};
        """),
        Migration(version: 16, summary: "requests to end a biometric overlap early carry an HSM MAC from the moment they are recorded", sql: """
        -- Set once, on insert, like destruction and offboarding requests (migration 13): an
        -- approval is refused for a request without a MAC that verifies, so a request written
        -- into the database naming another officer does not let one officer end an overlap alone.
        ALTER TABLE overlap_end_requests ADD COLUMN request_mac bytea, ADD COLUMN request_mac_version integer;
        """),
        Migration(version: 17, summary: "biometric token formats: recorded per bio key version; compact templates (1 KiB) beside wide ones (4 KiB)", sql: """
        -- Set when a `bio` version is created (1 wide: 32 bits per position, 2 compact: 8 bits),
        -- never updated, covered by the row MAC; NULL for other purposes and for `bio` versions
        -- made before, which are all wide. Templates keep their version's format, so both
        -- lengths live side by side while a rotation's overlap moves subjects to the new one.
        ALTER TABLE key_versions ADD COLUMN token_format smallint CHECK (token_format IN (1, 2));
        ALTER TABLE templates DROP CONSTRAINT templates_token_check;
        ALTER TABLE templates ADD CONSTRAINT templates_token_length CHECK (length(token) IN (1024, 4096));
        """),
        Migration(version: 18, summary: "key states are anchored in the HSM before their transaction commits: the pending list of destructions goes", sql: """
        -- Destructions (and disables, schedules, offboardings) now reach the token's list before
        -- their commit, so no committed destruction can be missing from it.
        DROP TABLE pending_destruction_anchors;
        """),
        Migration(version: 19, summary: "Ed25519 webhook seeds escrowed to a custodians' escrow key; the escrow public key pinned with an HSM MAC", sql: """
        -- The escrow public keys the ceremony made (`ceremony generate-escrow`; the private half
        -- exists only as custodians' shares). Each row carries an HSM MAC under the root MAC key,
        -- so a database writer cannot put a key of their own here. Never updated or deleted.
        CREATE TABLE escrow_keys (
            version integer PRIMARY KEY CHECK (version > 0),
            public_key bytea NOT NULL CHECK (length(public_key) = 32),
            ceremony_id text NOT NULL,
            mac bytea NOT NULL,
            mac_key_version integer NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        GRANT SELECT, INSERT ON escrow_keys TO {service};
        -- One HPKE ciphertext of an Ed25519 seed per webhook-ed25519 key version, written in the
        -- transaction that stores the version; the associated data binds it to its row. Gone with
        -- the row (a rolled-back pending version) and when the version is destroyed (trigger).
        CREATE TABLE key_version_escrows (
            tenant_id uuid NOT NULL,
            purpose text NOT NULL,
            version integer NOT NULL,
            escrow_key_version integer NOT NULL REFERENCES escrow_keys (version),
            encapsulated_key bytea NOT NULL,
            ciphertext bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, purpose, version),
            FOREIGN KEY (tenant_id, purpose, version) REFERENCES key_versions (tenant_id, purpose, version) ON DELETE CASCADE
        );
        ALTER TABLE key_version_escrows ENABLE ROW LEVEL SECURITY;
        ALTER TABLE key_version_escrows FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON key_version_escrows
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
        GRANT SELECT, INSERT, DELETE ON key_version_escrows TO {service};
        -- A destroyed version's seed must not stay recoverable by the custodians: its escrow goes
        -- in the destroying transaction, whichever code path destroys it.
        CREATE FUNCTION {schema}.drop_destroyed_escrow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM {schema}.key_version_escrows WHERE tenant_id = NEW.tenant_id AND purpose = NEW.purpose AND version = NEW.version; RETURN NEW; END $$;
        CREATE TRIGGER drop_destroyed_escrow AFTER UPDATE OF state ON key_versions
            FOR EACH ROW WHEN (NEW.state = 'destroyed') EXECUTE FUNCTION {schema}.drop_destroyed_escrow();
        """),
        Migration(version: 20, summary: "webhook key restores listed before their import, cleared with their audit entry", sql: """
        -- `ceremony restore-webhook-keys` lists a version and the tokens it is about to import
        -- onto before the import, and clears the row in the transaction of its audit entry: a run
        -- killed in between leaves the import for the next run to record, not a restore that no
        -- audit entry shows. Labels and token selectors only.
        CREATE TABLE pending_webhook_key_restores (
            label text PRIMARY KEY,
            tenant_id uuid NOT NULL REFERENCES tenants (id),
            version integer NOT NULL CHECK (version > 0),
            tokens text[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        GRANT SELECT, INSERT, UPDATE, DELETE ON pending_webhook_key_restores TO {service};
        """),
        Migration(version: 21, summary: "biometric token format 3 (quaternary: 4,096 positions of 2 bits, 1 KiB); tenant thresholds record the format they were set for", sql: """
        -- The quaternary format's templates are 1,024 bytes like compact ones, so the template
        -- length check stands; the version's recorded format (under the row MAC) tells them apart.
        ALTER TABLE key_versions DROP CONSTRAINT key_versions_token_format_check;
        ALTER TABLE key_versions ADD CONSTRAINT key_versions_token_format_check CHECK (token_format IN (1, 2, 3));
        -- Scores of the quaternary format are on another scale (impostors near 0.44, not 0.066),
        -- so a tenant's thresholds apply only to formats of the shape they were set for; NULL:
        -- never set (each format's derived defaults). Every existing pair was set on the
        -- 1,024 × 16 scale (wide and compact), hence 2 for the rows there are now (a column
        -- default fills them without reading rows, which row-level security would hide here).
        ALTER TABLE tenant_policies ADD COLUMN thresholds_format smallint DEFAULT 2 CHECK (thresholds_format IN (1, 2, 3));
        ALTER TABLE tenant_policies ALTER COLUMN thresholds_format DROP DEFAULT;
        """),
        Migration(version: 22, summary: "templates record the transaction that last wrote their token: galleries catch up by polling, not by a NOTIFY in every enrolment", sql: """
        -- The writer's transaction id (xid8: never wraps). A poller that remembers the xmin of
        -- its last snapshot finds every row that snapshot could not see (TemplateStore.changes).
        -- Existing rows get 0 without a table rewrite (a volatile default would rewrite it):
        -- galleries load them whole, never through a poll.
        ALTER TABLE templates ADD COLUMN changed_xid xid8 NOT NULL DEFAULT '0';
        ALTER TABLE templates ALTER COLUMN changed_xid SET DEFAULT pg_current_xact_id();
        CREATE INDEX templates_changed ON templates (tenant_id, changed_xid);
        GRANT UPDATE (changed_xid) ON templates TO {service};
        """),
        Migration(version: 23, summary: "Enrol and Verify as one read and one single-statement write: functions that scope themselves to the caller's tenant", sql: """
        -- Each function sets the transaction-local tenant scope first, as every tenant
        -- transaction does, so row-level security applies to its statements exactly as to the
        -- service's own (SECURITY INVOKER, the default: they run as the service role). Called
        -- outside BEGIN, a call is its own transaction: one round trip where BEGIN, set_config,
        -- the statements and COMMIT took five (docs/architecture.md, "Enrol and Verify").
        -- Table names are schema-qualified: the functions do not depend on the caller's search_path.

        -- What Enrol and Verify read before they tokenize: the session, the attempt this call
        -- would count against its subject (this one included; a window that started at or before
        -- p_cutoff starts afresh at p_now) and the subject's templates, one row per template
        -- (one with NULL template columns when it has none). Reads only: no commit record.
        CREATE FUNCTION {schema}.session_for_biometrics(p_tenant uuid, p_session uuid, p_now timestamptz, p_cutoff timestamptz)
        RETURNS TABLE (
            o_id uuid, o_subject_ref text, o_pii_version integer, o_sealed_name bytea, o_sealed_email bytea,
            o_data_key_version integer, o_expires_at timestamptz, o_link_opened_at timestamptz, o_notice_version text,
            o_consented_at timestamptz, o_outcome text, o_confidence text, o_biometric_key_version integer,
            o_completed_at timestamptz, o_created_at timestamptz, o_attempts bigint, o_window_start timestamptz,
            o_key_version bigint, o_token bytea)
        -- The subject is looked up first and joined on as a value: joined on the session's column,
        -- the planner folded the tenant scope into a one-time filter and, for a tenant newer than
        -- its statistics, scanned all the tenant's templates for every call (9,036 in the
        -- benchmark). A pii move between the two statements changes the reference: read again.
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            FOR i IN 1..3 LOOP
                SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s WHERE s.id = p_session;
                IF NOT FOUND THEN
                    RETURN;
                END IF;
                RETURN QUERY
                SELECT s.id, s.subject_ref, s.pii_version, s.sealed_name, s.sealed_email, s.data_key_version, s.expires_at,
                    s.link_opened_at, s.notice_version, s.consented_at, s.outcome, s.confidence, s.biometric_key_version,
                    s.completed_at, s.created_at,
                    CASE WHEN a.window_start IS NULL OR a.window_start <= p_cutoff THEN 1 ELSE a.attempts + 1 END::bigint,
                    CASE WHEN a.window_start IS NULL OR a.window_start <= p_cutoff THEN p_now ELSE a.window_start END,
                    t.key_version::bigint, t.token
                FROM {schema}.verification_sessions s
                LEFT JOIN {schema}.verification_attempts a ON a.tenant_id = p_tenant AND a.subject_ref = v_subject
                LEFT JOIN {schema}.templates t ON t.tenant_id = p_tenant AND t.subject_ref = v_subject
                WHERE s.id = p_session AND s.subject_ref = v_subject;
                IF FOUND THEN
                    RETURN;
                END IF;
            END LOOP;
        END
        $$;

        -- Enrol's write: the session locked and found still open, consented, unexpired and of
        -- the subject read before; the subject still without a template of any version; then the
        -- template stored and the session completed. Anything else writes nothing and says why:
        -- 'session_changed' (the caller re-runs the call in a transaction, which names the exact
        -- refusal) or 'already_enrolled' (another enrolment got there first).
        CREATE FUNCTION {schema}.complete_enrolment(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_key_version bigint, p_token bytea, p_now timestamptz)
        RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
            FOR UPDATE;
            IF NOT FOUND OR v_subject <> p_subject THEN
                RETURN 'session_changed';
            END IF;
            IF EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject) THEN
                RETURN 'already_enrolled';
            END IF;
            INSERT INTO {schema}.templates (tenant_id, subject_ref, pii_version, key_version, token)
            VALUES (p_tenant, v_subject, p_pii_version, p_key_version, p_token)
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN 'already_enrolled';
            END IF;
            UPDATE {schema}.verification_sessions s SET outcome = 'enrolled', confidence = NULL,
                biometric_key_version = p_key_version, completed_at = p_now
            WHERE s.id = p_session;
            RETURN 'completed';
        END
        $$;

        -- Verify's write: the session locked and found still open, consented and unexpired; one
        -- attempt counted against its subject unless the window's limit is reached (then nothing
        -- is written and the window's start is returned); the templates marked used and the
        -- session completed with the decision.
        CREATE FUNCTION {schema}.complete_verification(p_tenant uuid, p_session uuid, p_outcome text, p_confidence text,
            p_key_version bigint, p_now timestamptz, p_cutoff timestamptz, p_attempt_limit bigint)
        RETURNS TABLE (o_status text, o_window_start timestamptz)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
            FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'session_changed'::text, NULL::timestamptz;
                RETURN;
            END IF;
            INSERT INTO {schema}.verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
            VALUES (p_tenant, v_subject, p_now, 1)
            ON CONFLICT ON CONSTRAINT verification_attempts_pkey DO UPDATE SET
                attempts = CASE WHEN a.window_start <= p_cutoff THEN 1 ELSE a.attempts + 1 END,
                window_start = CASE WHEN a.window_start <= p_cutoff THEN EXCLUDED.window_start ELSE a.window_start END
            WHERE a.window_start <= p_cutoff OR a.attempts < p_attempt_limit;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'too_many_attempts'::text, a.window_start FROM {schema}.verification_attempts a
                WHERE a.tenant_id = p_tenant AND a.subject_ref = v_subject;
                RETURN;
            END IF;
            -- Marking a template used rewrites its row (a new 1 or 4 KiB tuple, new entries in
            -- every index: last_used_at is indexed). Retention counts in days: once an hour is
            -- enough, so a subject verified often costs one rewrite an hour, not one per call.
            UPDATE {schema}.templates t SET last_used_at = now()
            WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject AND t.last_used_at < now() - interval '1 hour';
            UPDATE {schema}.verification_sessions s SET outcome = p_outcome, confidence = p_confidence,
                biometric_key_version = p_key_version, completed_at = p_now
            WHERE s.id = p_session;
            RETURN QUERY SELECT 'completed'::text, NULL::timestamptz;
        END
        $$;

        REVOKE ALL ON FUNCTION {schema}.session_for_biometrics(uuid, uuid, timestamptz, timestamptz) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.complete_enrolment(uuid, uuid, text, bigint, bigint, bytea, timestamptz) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.complete_verification(uuid, uuid, text, text, bigint, timestamptz, timestamptz, bigint) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.session_for_biometrics(uuid, uuid, timestamptz, timestamptz) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.complete_enrolment(uuid, uuid, text, bigint, bigint, bytea, timestamptz) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.complete_verification(uuid, uuid, text, text, bigint, timestamptz, timestamptz, bigint) TO {service};
        -- The service checks at start-up that the schema is at least its build's.
        GRANT SELECT ON {schema}.schema_migrations TO {service};
        """),
        Migration(version: 24, summary: "statements about one subject use the primary key, not an index that is led by tenant_id alone", sql: """
        -- Led by tenant_id, these two indexes competed with the primary key for statements about
        -- one subject (tenant_id = $1 AND subject_ref = $2): for a tenant newer than the
        -- planner's statistics (estimated at one row) it took either of them with a filter on
        -- subject_ref, so every Enrol and Verify read all of the tenant's templates (3,012 of
        -- them per statement in the benchmark, 27 ms). Their own queries (the gallery poll, the
        -- retention sweep, both scoped to a tenant by row-level security) range-scan the column
        -- across tenants instead: rows changed since a recent snapshot, rows unused for days.
        DROP INDEX templates_changed;
        CREATE INDEX templates_changed ON templates (changed_xid);
        DROP INDEX templates_last_used;
        CREATE INDEX templates_last_used ON templates (last_used_at);
        """),
        Migration(version: 25, summary: "Enrol stores no template under a biometric version that stopped matching since its features were tokenized", sql: """
        -- Enrol's token is made under the version active when the call began. A rotation whose
        -- overlap closed before the write dropped that version's templates and retired it:
        -- stored then, this template outlived the drop, unmatchable (Verify: not enrolled) yet
        -- blocking a fresh Enrol (already enrolled). The write now takes the version's lock shared
        -- (the overlap's close takes it exclusively, TemplateStore.lockBiometricVersionForClose),
        -- then finds the version still matching, or writes nothing and says 'key_version_retired'.
        -- Taken in that order, a close either waits for this commit and drops this template with
        -- the rest, or committed first and is seen. The same signature: grants stay.
        CREATE OR REPLACE FUNCTION {schema}.complete_enrolment(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_key_version bigint, p_token bytea, p_now timestamptz)
        RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
            FOR UPDATE;
            IF NOT FOUND OR v_subject <> p_subject THEN
                RETURN 'session_changed';
            END IF;
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || p_key_version::text, 0));
            PERFORM 1 FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = p_key_version
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            IF NOT FOUND THEN
                RETURN 'key_version_retired';
            END IF;
            IF EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject) THEN
                RETURN 'already_enrolled';
            END IF;
            INSERT INTO {schema}.templates (tenant_id, subject_ref, pii_version, key_version, token)
            VALUES (p_tenant, v_subject, p_pii_version, p_key_version, p_token)
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN 'already_enrolled';
            END IF;
            UPDATE {schema}.verification_sessions s SET outcome = 'enrolled', confidence = NULL,
                biometric_key_version = p_key_version, completed_at = p_now
            WHERE s.id = p_session;
            RETURN 'completed';
        END
        $$;
        """),
        Migration(version: 26, summary: "first enrolments of one subject serialised whatever their biometric version; Verify records no decision under a version that stopped matching", sql: """
        -- Two first enrolments of one subject under two versions (instances whose cached active
        -- version differs right after a rotation) both passed the EXISTS check, neither seeing the
        -- other's uncommitted row, and the primary key includes the version: both committed. The
        -- write now takes the subject's lock exclusively before it looks: the second waits for the
        -- first's commit, then sees its template. Order, as in the transaction path
        -- (TemplateStore.lockForTemplateWrite): session row, subject, version.
        -- Verify's decision is compared against a template of p_key_version: recorded after that
        -- version's overlap closed (its templates dropped), it names a comparison with a template
        -- that no longer exists. The write takes the version's lock shared and checks it still
        -- matches, as Enrol's does (migration 25), before it counts the attempt.
        -- The lock keys must stay spelled as TemplateStore.subjectLockKey / versionLockKey
        -- (Sources/Storage/TemplateStore+VersionLock.swift): hashtextextended of
        -- 'custos-subject:<tenant uuid>/<subject_ref>' and 'custos-bio-version:<tenant uuid>/<version>', seed 0.
        -- Same signatures: grants stay.
        CREATE OR REPLACE FUNCTION {schema}.complete_enrolment(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_key_version bigint, p_token bytea, p_now timestamptz)
        RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
            FOR UPDATE;
            IF NOT FOUND OR v_subject <> p_subject THEN
                RETURN 'session_changed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtextextended('custos-subject:' || p_tenant::text || '/' || v_subject, 0));
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || p_key_version::text, 0));
            PERFORM 1 FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = p_key_version
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            IF NOT FOUND THEN
                RETURN 'key_version_retired';
            END IF;
            -- A statement after the lock: its snapshot sees a first enrolment that held it.
            IF EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject) THEN
                RETURN 'already_enrolled';
            END IF;
            INSERT INTO {schema}.templates (tenant_id, subject_ref, pii_version, key_version, token)
            VALUES (p_tenant, v_subject, p_pii_version, p_key_version, p_token)
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN 'already_enrolled';
            END IF;
            UPDATE {schema}.verification_sessions s SET outcome = 'enrolled', confidence = NULL,
                biometric_key_version = p_key_version, completed_at = p_now
            WHERE s.id = p_session;
            RETURN 'completed';
        END
        $$;

        CREATE OR REPLACE FUNCTION {schema}.complete_verification(p_tenant uuid, p_session uuid, p_outcome text, p_confidence text,
            p_key_version bigint, p_now timestamptz, p_cutoff timestamptz, p_attempt_limit bigint)
        RETURNS TABLE (o_status text, o_window_start timestamptz)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
            FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'session_changed'::text, NULL::timestamptz;
                RETURN;
            END IF;
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || p_key_version::text, 0));
            PERFORM 1 FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = p_key_version
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'key_version_retired'::text, NULL::timestamptz;
                RETURN;
            END IF;
            INSERT INTO {schema}.verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
            VALUES (p_tenant, v_subject, p_now, 1)
            ON CONFLICT ON CONSTRAINT verification_attempts_pkey DO UPDATE SET
                attempts = CASE WHEN a.window_start <= p_cutoff THEN 1 ELSE a.attempts + 1 END,
                window_start = CASE WHEN a.window_start <= p_cutoff THEN EXCLUDED.window_start ELSE a.window_start END
            WHERE a.window_start <= p_cutoff OR a.attempts < p_attempt_limit;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'too_many_attempts'::text, a.window_start FROM {schema}.verification_attempts a
                WHERE a.tenant_id = p_tenant AND a.subject_ref = v_subject;
                RETURN;
            END IF;
            -- Once an hour at most (migration 23).
            UPDATE {schema}.templates t SET last_used_at = now()
            WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject AND t.last_used_at < now() - interval '1 hour';
            UPDATE {schema}.verification_sessions s SET outcome = p_outcome, confidence = p_confidence,
                biometric_key_version = p_key_version, completed_at = p_now
            WHERE s.id = p_session;
            RETURN QUERY SELECT 'completed'::text, NULL::timestamptz;
        END
        $$;
        """),
        Migration(version: 27, summary: "CreateSession, OpenGateway and RecordConsent as one statement each; statements about one session use the primary key", sql: """
        -- Led by tenant_id, this index competed with the primary key for statements about one
        -- session (id = $1; row-level security adds tenant_id = <scope>): for a tenant newer than the
        -- planner's statistics it took this index with a filter on id, so every lock, update and read
        -- of a session scanned all the tenant's sessions (EXPLAIN (ANALYZE, BUFFERS), 200,000 sessions:
        -- 200,258 buffers and 178 ms for one row; docs/benchmarks.md, round h-sessionflow). Statements
        -- about one subject (the pii move, erasure, export) keep an index on their own column.
        DROP INDEX verification_sessions_subject;
        CREATE INDEX verification_sessions_subject ON verification_sessions (subject_ref);

        -- CreateSession's write, after the subject references were made and the name and email sealed
        -- with no connection held: the session and its gateway link inserted, one commit. A subject
        -- with rows still under an older reference (p_old_subjects: other pii versions, other Unicode
        -- forms) writes nothing and answers 'move_first': the caller then moves them and inserts in
        -- one transaction, as before (SubjectReferenceMigration, which also tells the galleries).
        CREATE FUNCTION {schema}.create_session(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_old_subjects text[], p_sealed_name bytea, p_sealed_email bytea, p_data_key_version bigint,
            p_expires_at timestamptz, p_link_hash bytea)
        RETURNS text
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            IF cardinality(p_old_subjects) > 0 AND (
                EXISTS (SELECT 1 FROM {schema}.verification_sessions s WHERE s.subject_ref = ANY (p_old_subjects))
                OR EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = ANY (p_old_subjects))
                OR EXISTS (SELECT 1 FROM {schema}.verification_attempts a WHERE a.tenant_id = p_tenant AND a.subject_ref = ANY (p_old_subjects))) THEN
                RETURN 'move_first';
            END IF;
            INSERT INTO {schema}.verification_sessions (id, tenant_id, subject_ref, pii_version, sealed_name, sealed_email, data_key_version, expires_at)
            VALUES (p_session, p_tenant, p_subject, p_pii_version, p_sealed_name, p_sealed_email, p_data_key_version, p_expires_at);
            INSERT INTO {schema}.gateway_links (link_hash, tenant_id, session_id, expires_at)
            VALUES (p_link_hash, p_tenant, p_session, p_expires_at);
            RETURN 'created';
        END
        $$;

        -- OpenGateway: the link locked if it is this tenant's, unused and unexpired (a second open
        -- waits for the first and then finds it used), its session marked opened and returned, the
        -- link marked used; one commit. Otherwise nothing is written and o_status says why:
        -- 'unknown' (no such link, or another tenant's), 'already_used', 'expired', or
        -- 'session_not_found' (o_id: the session the link names, not in the tenant's scope).
        CREATE FUNCTION {schema}.open_gateway(p_tenant uuid, p_link_hash bytea, p_now timestamptz)
        RETURNS TABLE (
            o_id uuid, o_subject_ref text, o_pii_version integer, o_sealed_name bytea, o_sealed_email bytea,
            o_data_key_version integer, o_expires_at timestamptz, o_link_opened_at timestamptz, o_notice_version text,
            o_consented_at timestamptz, o_outcome text, o_confidence text, o_biometric_key_version integer,
            o_completed_at timestamptz, o_created_at timestamptz, o_status text)
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        DECLARE
            v_session uuid;
            v_used boolean;
            v_expired boolean;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            RETURN QUERY
            UPDATE {schema}.verification_sessions s SET link_opened_at = p_now
            WHERE s.id = (
                SELECT l.session_id FROM {schema}.gateway_links l
                WHERE l.link_hash = p_link_hash AND l.tenant_id = p_tenant AND l.opened_at IS NULL AND l.expires_at > p_now
                FOR UPDATE)
            RETURNING s.id, s.subject_ref, s.pii_version, s.sealed_name, s.sealed_email, s.data_key_version, s.expires_at,
                s.link_opened_at, s.notice_version, s.consented_at, s.outcome, s.confidence, s.biometric_key_version,
                s.completed_at, s.created_at, 'opened'::text;
            IF FOUND THEN
                UPDATE {schema}.gateway_links l SET opened_at = p_now WHERE l.link_hash = p_link_hash;
                RETURN;
            END IF;
            SELECT l.session_id, l.opened_at IS NOT NULL, l.expires_at <= p_now INTO v_session, v_used, v_expired
            FROM {schema}.gateway_links l WHERE l.link_hash = p_link_hash AND l.tenant_id = p_tenant;
            o_status := CASE WHEN v_session IS NULL THEN 'unknown' WHEN v_used THEN 'already_used'
                WHEN v_expired THEN 'expired' ELSE 'session_not_found' END;
            o_id := v_session;
            RETURN NEXT;
        END
        $$;

        -- RecordConsent: the consent written if the session is still open (not completed, unexpired)
        -- and its link was opened, one commit; a completion committing meanwhile is waited for and
        -- seen. Otherwise nothing is written and the answer says why, in the order the refusals were
        -- always checked: 'not_found', 'completed', 'expired', 'not_opened'.
        CREATE FUNCTION {schema}.record_consent(p_tenant uuid, p_session uuid, p_notice_version text, p_now timestamptz)
        RETURNS text
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        DECLARE
            v_why text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            UPDATE {schema}.verification_sessions s SET notice_version = p_notice_version, consented_at = p_now
            WHERE s.id = p_session AND s.outcome IS NULL AND s.expires_at > p_now AND s.link_opened_at IS NOT NULL;
            IF FOUND THEN
                RETURN 'consented';
            END IF;
            SELECT CASE WHEN s.outcome IS NOT NULL THEN 'completed' WHEN s.expires_at <= p_now THEN 'expired' ELSE 'not_opened' END
            INTO v_why FROM {schema}.verification_sessions s WHERE s.id = p_session;
            RETURN coalesce(v_why, 'not_found');
        END
        $$;

        REVOKE ALL ON FUNCTION {schema}.create_session(uuid, uuid, text, bigint, text[], bytea, bytea, bigint, timestamptz, bytea) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.open_gateway(uuid, bytea, timestamptz) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.record_consent(uuid, uuid, text, timestamptz) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.create_session(uuid, uuid, text, bigint, text[], bytea, bytea, bigint, timestamptz, bytea) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.open_gateway(uuid, bytea, timestamptz) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.record_consent(uuid, uuid, text, timestamptz) TO {service};
        """),
        Migration(version: 28, summary: "the biometric-version locks and their check in one call (the overlap Verify's transaction)", sql: """
        -- Migration 26 gave the overlap Verify's transaction the version lock of the template it
        -- compared with and of the one a GREEN match moves the subject to, each a lock statement
        -- then a check statement (a check in the lock's own statement reads a snapshot from before
        -- the wait): four more round trips, and the overlap Verify ran ~30 % slower. In a
        -- function each statement takes its own snapshot, so the locks, in ascending version order
        -- (the close takes one version's lock alone), and then the check are one call. Key:
        -- TemplateStore.versionLockKey, spelled here as in migration 25.
        CREATE FUNCTION {schema}.lock_matching_biometric_versions(p_tenant uuid, p_versions bigint[], p_now timestamptz)
        RETURNS bigint[]
        LANGUAGE plpgsql AS $$
        DECLARE
            v_version bigint;
            v_matching bigint[];
        BEGIN
            FOR v_version IN SELECT DISTINCT x FROM unnest(p_versions) AS x ORDER BY x LOOP
                PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || v_version::text, 0));
            END LOOP;
            SELECT coalesce(array_agg(k.version::bigint ORDER BY k.version), '{}') INTO v_matching
            FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = ANY(p_versions)
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            RETURN v_matching;
        END
        $$;
        REVOKE ALL ON FUNCTION {schema}.lock_matching_biometric_versions(uuid, bigint[], timestamptz) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.lock_matching_biometric_versions(uuid, bigint[], timestamptz) TO {service};
        """),
        Migration(version: 29, summary: "retention finds ended sessions by index instead of scanning the table per tenant and batch", sql: """
        -- Measured (helper-57, 1.04M sessions, PostgreSQL 15): without these, each retention batch
        -- and each tenant with nothing due scanned the whole table (140-250 ms per statement,
        -- ~150 ms per tenant and run: 400 tenants outgrow the CLI's 60 s); with them 1-8 ms. The
        -- OR in SessionStore.deleteEnded becomes a BitmapOr over the two. tenant_id second, not
        -- first: first, it took the by-id statements of a tenant newer than the statistics
        -- (199,999 rows filtered, 47 ms; the migration 24/27 hazard); absent, a 90-day tenant with
        -- nothing due walked another tenant's 400,000 sessions kept for a year, dropping each by
        -- row-level security (357 ms; helper-60), while second it filters inside the index (16 ms).
        -- Cost: the completion UPDATE is no longer HOT (WAL per completion 255 -> 496 bytes;
        -- latency within noise). Not on a large backlog: there the planner rightly scans.
        CREATE INDEX verification_sessions_completed ON verification_sessions (completed_at, tenant_id);
        CREATE INDEX verification_sessions_expired ON verification_sessions (expires_at, tenant_id) WHERE completed_at IS NULL;
        """),
        Migration(version: 30, summary: "retention begins with the tenants its last run did not reach", sql: """
        -- A run cut off (the CLI's deadline, a restart) went through the tenants oldest first
        -- every time, so the newest never had their retention. Each tenant's last turn's start:
        -- the next run goes by it, oldest first. Timestamps only.
        CREATE TABLE retention_turns (
            tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
            started_at timestamptz NOT NULL
        );
        GRANT SELECT, INSERT, UPDATE ON retention_turns TO {service};
        """),
        Migration(version: 31, summary: "root keys are recorded by the owner role (the ceremony), the service only at its first start", sql: """
        -- The root keys the database vouches for decide which KEKs wrap every new tenant key. The
        -- service role could record them: with the user PIN as well, a KEK set planted on the
        -- token and recorded was trusted, and running instances adopt a newer recorded set at once
        -- (helper-68, session 19). After the first record only the owner role (the key ceremony)
        -- records root keys; the service's first start against a token records through this
        -- function, which refuses once anything is recorded. Check values are given as hex.
        REVOKE INSERT ON root_keys FROM {service};
        CREATE FUNCTION {schema}.record_first_root_keys(p_labels text[], p_check_values text[]) RETURNS boolean
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
        BEGIN
            LOCK TABLE root_keys IN SHARE ROW EXCLUSIVE MODE;
            -- NULL arrays or elements, empty or odd values, labels that are not root keys' (as
            -- RootKeyInventory.parse reads them): nothing recorded.
            IF EXISTS (SELECT 1 FROM root_keys) OR coalesce(cardinality(p_labels), 0) = 0
                OR cardinality(p_labels) IS DISTINCT FROM cardinality(p_check_values)
                OR array_position(p_labels, NULL) IS NOT NULL OR array_position(p_check_values, NULL) IS NOT NULL
                OR EXISTS (SELECT 1 FROM unnest(p_labels, p_check_values) AS entry (label, check_value)
                           WHERE label !~ '^custos/root/(mac/v[1-9][0-9]*|kek/v[1-9][0-9]*|kek/[a-z0-9-]+/v[1-9][0-9]*)$'
                              OR check_value !~ '^([0-9a-f]{2}){1,64}$') THEN
                RETURN false;
            END IF;
            INSERT INTO root_keys (label, check_value)
                SELECT label, decode(check_value, 'hex') FROM unnest(p_labels, p_check_values) AS entry (label, check_value);
            RETURN true;
        END $$;
        REVOKE ALL ON FUNCTION {schema}.record_first_root_keys(text[], text[]) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.record_first_root_keys(text[], text[]) TO {service};
        """),
        Migration(version: 32, summary: "API-key revocations are insert-only for the service role; new keys' hashes bind their tenant, scopes and expiry", sql: """
        -- The service role may set api_keys.revoked_at back to NULL (the column is granted for the
        -- revocation itself), and delete and insert key rows (offboarding): with its password
        -- alone a revoked key verified again (helper-71, session 20). Every revocation is now also
        -- a row here, which the service role can add and never change or remove; a key is revoked
        -- if either says so. The trigger records revocations by instances of the previous version
        -- during a rolling upgrade too.
        -- Keyed by tenant too: a row the writer inserted in advance under another tenant must not
        -- take the key's conflict, hidden from the key's own tenant by row-level security (helper-75).
        CREATE TABLE api_key_revocations (
            tenant_id uuid NOT NULL,
            key_id text NOT NULL,
            revoked_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, key_id)
        );
        ALTER TABLE api_key_revocations ENABLE ROW LEVEL SECURITY;
        ALTER TABLE api_key_revocations FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON api_key_revocations
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
        GRANT SELECT, INSERT ON api_key_revocations TO {service};
        -- The revocations so far. Row-level security is forced on the owner too, and no tenant
        -- is set here: lifted for this copy only, inside the migration's transaction (helper-75:
        -- under it the copy saw no rows).
        ALTER TABLE api_keys NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE api_key_revocations NO FORCE ROW LEVEL SECURITY;
        INSERT INTO api_key_revocations (tenant_id, key_id, revoked_at)
            SELECT tenant_id, key_id, revoked_at FROM api_keys WHERE revoked_at IS NOT NULL;
        ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
        ALTER TABLE api_key_revocations FORCE ROW LEVEL SECURITY;
        CREATE FUNCTION {schema}.record_api_key_revocation() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {schema}.api_key_revocations (tenant_id, key_id, revoked_at) VALUES (NEW.tenant_id, NEW.key_id, NEW.revoked_at) ON CONFLICT (tenant_id, key_id) DO NOTHING; RETURN NEW; END $$;
        REVOKE ALL ON FUNCTION {schema}.record_api_key_revocation() FROM PUBLIC;
        CREATE TRIGGER record_api_key_revocation AFTER UPDATE OF revoked_at ON api_keys
            FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION {schema}.record_api_key_revocation();
        -- The same writer could delete a key's row and insert it again with wider scopes or no
        -- expiry: the hash (an HMAC of the key alone) still matched. Keys issued from now on are
        -- hashed with their tenant, scopes and expiry (format 2), so a row changed that way no
        -- longer verifies; the writer cannot compute a format-1 hash of such a key. Rows issued
        -- before keep format 1 (unbound) until the key is re-issued. Instances of the previous
        -- version verify format 1 only: during a rolling upgrade a key issued by an upgraded
        -- instance verifies on upgraded ones.
        ALTER TABLE api_keys ADD COLUMN hash_format smallint NOT NULL DEFAULT 1 CHECK (hash_format IN (1, 2));
        """),
        Migration(version: 33, summary: "templates and verification sessions carry HSM MACs: a token bound to its tenant, subject and version; a session's consent and outcome", sql: """
        -- With the service role's password alone, one subject's token could be copied onto
        -- another's row (an impostor enrolled under a throwaway subject then verified GREEN as
        -- the target), and a session's consent or outcome written directly (GetSession showed
        -- GREEN and SignDelivery signed it); no audit entry said so (helper-71 F3, session 20).
        -- Each template now carries a MAC under the root MAC key (domain "custos/templates/v1")
        -- over tenant, subject reference, biometric version and token, checked before every
        -- comparison; each session one over its subject reference and expiry, written at its
        -- creation ("custos/verification_sessions/subject/v1": pointing an open session at another
        -- subject had Enrol seal an impostor's token under that subject, helper-80), and one over
        -- its consent and outcome ("custos/verification_sessions/v1"), written by the statement
        -- that records them; both are checked before features are processed and before the
        -- outcome is shown, signed or exported. The writer cannot compute one. Rows written before have none: they count
        -- only until the HSM's list of key states says every record was sealed
        -- (docs/operations.md, "Record MACs"); the partial indexes find them for the sealing.
        ALTER TABLE templates ADD COLUMN record_mac bytea CHECK (length(record_mac) = 32);
        ALTER TABLE templates ADD COLUMN record_mac_version integer CHECK (record_mac_version > 0);
        ALTER TABLE templates ADD CONSTRAINT templates_record_mac_whole CHECK ((record_mac IS NULL) = (record_mac_version IS NULL));
        CREATE INDEX templates_unsealed ON templates (tenant_id) WHERE record_mac IS NULL;
        GRANT UPDATE (record_mac, record_mac_version) ON templates TO {service};
        ALTER TABLE verification_sessions ADD COLUMN record_mac bytea CHECK (length(record_mac) = 32);
        ALTER TABLE verification_sessions ADD COLUMN record_mac_version integer CHECK (record_mac_version > 0);
        ALTER TABLE verification_sessions ADD CONSTRAINT verification_sessions_record_mac_whole
            CHECK ((record_mac IS NULL) = (record_mac_version IS NULL));
        ALTER TABLE verification_sessions ADD COLUMN subject_mac bytea CHECK (length(subject_mac) = 32);
        ALTER TABLE verification_sessions ADD COLUMN subject_mac_version integer CHECK (subject_mac_version > 0);
        ALTER TABLE verification_sessions ADD CONSTRAINT verification_sessions_subject_mac_whole
            CHECK ((subject_mac IS NULL) = (subject_mac_version IS NULL));
        CREATE INDEX verification_sessions_unsealed ON verification_sessions (tenant_id) WHERE subject_mac IS NULL OR (record_mac IS NULL AND (
            notice_version IS NOT NULL OR consented_at IS NOT NULL OR outcome IS NOT NULL
            OR confidence IS NOT NULL OR biometric_key_version IS NOT NULL OR completed_at IS NOT NULL));
        GRANT UPDATE (record_mac, record_mac_version, subject_mac, subject_mac_version) ON verification_sessions TO {service};
        -- Whether this database was created with record MACs (migrations run in one transaction,
        -- so migration 1 applied in this one has this transaction's time): then no row was ever
        -- written without a MAC, and start-up marks every record sealed at once. An upgraded one
        -- waits for its officer (`custos db seal-records`): instances of the previous build may
        -- still write rows without a MAC (helper-80).
        -- A completion is for good. The writer could clear a completed session's outcome columns,
        -- and RecordConsent then sealed a fresh consent on it: the session was verified again and
        -- a RED already signed came back GREEN (helper-81). Every completion is also a row here,
        -- which the service role can insert and never change or remove (a trigger records it, by
        -- instances of the previous version too); consent and completion refuse a session that
        -- has one. Ids and times only: nothing about the subject.
        CREATE TABLE session_completions (
            tenant_id uuid NOT NULL,
            session_id uuid NOT NULL,
            completed_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, session_id)
        );
        ALTER TABLE session_completions ENABLE ROW LEVEL SECURITY;
        ALTER TABLE session_completions FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON session_completions
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
        GRANT SELECT, INSERT ON session_completions TO {service};
        -- The completions so far, with forcing lifted for this copy only (as migration 32's).
        ALTER TABLE verification_sessions NO FORCE ROW LEVEL SECURITY;
        ALTER TABLE session_completions NO FORCE ROW LEVEL SECURITY;
        INSERT INTO session_completions (tenant_id, session_id, completed_at)
            SELECT tenant_id, id, coalesce(completed_at, now()) FROM verification_sessions WHERE outcome IS NOT NULL;
        ALTER TABLE verification_sessions FORCE ROW LEVEL SECURITY;
        ALTER TABLE session_completions FORCE ROW LEVEL SECURITY;
        CREATE FUNCTION {schema}.record_session_completion() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {schema}.session_completions (tenant_id, session_id, completed_at) VALUES (NEW.tenant_id, NEW.id, coalesce(NEW.completed_at, now())) ON CONFLICT (tenant_id, session_id) DO NOTHING; RETURN NEW; END $$;
        REVOKE ALL ON FUNCTION {schema}.record_session_completion() FROM PUBLIC;
        CREATE TRIGGER record_session_completion AFTER UPDATE OF outcome ON verification_sessions
            FOR EACH ROW WHEN (NEW.outcome IS NOT NULL) EXECUTE FUNCTION {schema}.record_session_completion();

        -- Start-up looks for the sealing's audit entry (TenantKeyring.reconcileRecordSeals).
        CREATE INDEX audit_log_action ON audit_log (action);
        CREATE TABLE record_seal_origin (created_with_record_macs boolean NOT NULL);
        INSERT INTO record_seal_origin (created_with_record_macs)
            SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = 1 AND applied_at = now());
        GRANT SELECT ON record_seal_origin TO {service};

        -- Migration 23's read, with the session's MAC and each template's. A new name: a
        -- function's result columns cannot change in place, and instances of the previous
        -- version call the old one during a rolling upgrade.
        CREATE FUNCTION {schema}.session_and_sealed_templates(p_tenant uuid, p_session uuid, p_now timestamptz, p_cutoff timestamptz)
        RETURNS TABLE (
            o_id uuid, o_subject_ref text, o_pii_version integer, o_sealed_name bytea, o_sealed_email bytea,
            o_data_key_version integer, o_expires_at timestamptz, o_link_opened_at timestamptz, o_notice_version text,
            o_consented_at timestamptz, o_outcome text, o_confidence text, o_biometric_key_version integer,
            o_completed_at timestamptz, o_created_at timestamptz, o_record_mac bytea, o_record_mac_version integer,
            o_subject_mac bytea, o_subject_mac_version integer, o_attempts bigint, o_window_start timestamptz,
            o_key_version bigint, o_token bytea, o_token_mac bytea, o_token_mac_version bigint)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            FOR i IN 1..3 LOOP
                SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s WHERE s.id = p_session;
                IF NOT FOUND THEN
                    RETURN;
                END IF;
                RETURN QUERY
                SELECT s.id, s.subject_ref, s.pii_version, s.sealed_name, s.sealed_email, s.data_key_version, s.expires_at,
                    s.link_opened_at, s.notice_version, s.consented_at, s.outcome, s.confidence, s.biometric_key_version,
                    s.completed_at, s.created_at, s.record_mac, s.record_mac_version, s.subject_mac, s.subject_mac_version,
                    CASE WHEN a.window_start IS NULL OR a.window_start <= p_cutoff THEN 1 ELSE a.attempts + 1 END::bigint,
                    CASE WHEN a.window_start IS NULL OR a.window_start <= p_cutoff THEN p_now ELSE a.window_start END,
                    t.key_version::bigint, t.token, t.record_mac, t.record_mac_version::bigint
                FROM {schema}.verification_sessions s
                LEFT JOIN {schema}.verification_attempts a ON a.tenant_id = p_tenant AND a.subject_ref = v_subject
                LEFT JOIN {schema}.templates t ON t.tenant_id = p_tenant AND t.subject_ref = v_subject
                WHERE s.id = p_session AND s.subject_ref = v_subject;
                IF FOUND THEN
                    RETURN;
                END IF;
            END LOOP;
        END
        $$;

        -- Migration 26's Enrol write, storing the template's MAC and the completed session's
        -- (overloads: the previous version's instances keep calling the old signatures during a
        -- rolling upgrade; the service role could always write these rows directly).
        CREATE FUNCTION {schema}.complete_enrolment(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_key_version bigint, p_token bytea, p_now timestamptz, p_record_mac bytea, p_record_mac_version bigint,
            p_session_mac bytea, p_session_mac_version bigint)
        RETURNS text
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
                AND NOT EXISTS (SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session)
            FOR UPDATE;
            IF NOT FOUND OR v_subject <> p_subject THEN
                RETURN 'session_changed';
            END IF;
            PERFORM pg_advisory_xact_lock(hashtextextended('custos-subject:' || p_tenant::text || '/' || v_subject, 0));
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || p_key_version::text, 0));
            PERFORM 1 FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = p_key_version
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            IF NOT FOUND THEN
                RETURN 'key_version_retired';
            END IF;
            IF EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject) THEN
                RETURN 'already_enrolled';
            END IF;
            INSERT INTO {schema}.templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
            VALUES (p_tenant, v_subject, p_pii_version, p_key_version, p_token, p_record_mac, p_record_mac_version)
            ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN 'already_enrolled';
            END IF;
            UPDATE {schema}.verification_sessions s SET outcome = 'enrolled', confidence = NULL,
                biometric_key_version = p_key_version, completed_at = p_now,
                record_mac = p_session_mac, record_mac_version = p_session_mac_version
            WHERE s.id = p_session;
            RETURN 'completed';
        END
        $$;

        -- Migration 26's Verify write, storing the completed session's MAC.
        CREATE FUNCTION {schema}.complete_verification(p_tenant uuid, p_session uuid, p_outcome text, p_confidence text,
            p_key_version bigint, p_now timestamptz, p_cutoff timestamptz, p_attempt_limit bigint,
            p_session_mac bytea, p_session_mac_version bigint)
        RETURNS TABLE (o_status text, o_window_start timestamptz)
        LANGUAGE plpgsql AS $$
        DECLARE
            v_subject text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            SELECT s.subject_ref INTO v_subject FROM {schema}.verification_sessions s
            WHERE s.id = p_session AND s.outcome IS NULL AND s.consented_at IS NOT NULL AND s.expires_at > p_now
                AND NOT EXISTS (SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session)
            FOR UPDATE;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'session_changed'::text, NULL::timestamptz;
                RETURN;
            END IF;
            PERFORM pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || p_tenant::text || '/' || p_key_version::text, 0));
            PERFORM 1 FROM {schema}.key_versions k
            WHERE k.tenant_id = p_tenant AND k.purpose = 'bio-prf' AND k.version = p_key_version
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > p_now));
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'key_version_retired'::text, NULL::timestamptz;
                RETURN;
            END IF;
            INSERT INTO {schema}.verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
            VALUES (p_tenant, v_subject, p_now, 1)
            ON CONFLICT ON CONSTRAINT verification_attempts_pkey DO UPDATE SET
                attempts = CASE WHEN a.window_start <= p_cutoff THEN 1 ELSE a.attempts + 1 END,
                window_start = CASE WHEN a.window_start <= p_cutoff THEN EXCLUDED.window_start ELSE a.window_start END
            WHERE a.window_start <= p_cutoff OR a.attempts < p_attempt_limit;
            IF NOT FOUND THEN
                RETURN QUERY SELECT 'too_many_attempts'::text, a.window_start FROM {schema}.verification_attempts a
                WHERE a.tenant_id = p_tenant AND a.subject_ref = v_subject;
                RETURN;
            END IF;
            UPDATE {schema}.templates t SET last_used_at = now()
            WHERE t.tenant_id = p_tenant AND t.subject_ref = v_subject AND t.last_used_at < now() - interval '1 hour';
            UPDATE {schema}.verification_sessions s SET outcome = p_outcome, confidence = p_confidence,
                biometric_key_version = p_key_version, completed_at = p_now,
                record_mac = p_session_mac, record_mac_version = p_session_mac_version
            WHERE s.id = p_session;
            RETURN QUERY SELECT 'completed'::text, NULL::timestamptz;
        END
        $$;

        -- Migration 27's RecordConsent write, storing the consented session's MAC.
        CREATE FUNCTION {schema}.record_consent(p_tenant uuid, p_session uuid, p_notice_version text, p_now timestamptz,
            p_session_mac bytea, p_session_mac_version bigint)
        RETURNS text
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        DECLARE
            v_why text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            UPDATE {schema}.verification_sessions s SET notice_version = p_notice_version, consented_at = p_now,
                record_mac = p_session_mac, record_mac_version = p_session_mac_version
            WHERE s.id = p_session AND s.outcome IS NULL AND s.expires_at > p_now AND s.link_opened_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session);
            IF FOUND THEN
                RETURN 'consented';
            END IF;
            SELECT CASE WHEN s.outcome IS NOT NULL OR EXISTS (
                    SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session) THEN 'completed'
                WHEN s.expires_at <= p_now THEN 'expired' ELSE 'not_opened' END
            INTO v_why FROM {schema}.verification_sessions s WHERE s.id = p_session;
            RETURN coalesce(v_why, 'not_found');
        END
        $$;

        -- Migration 27's CreateSession write, storing the session's subject MAC.
        CREATE FUNCTION {schema}.create_session(p_tenant uuid, p_session uuid, p_subject text, p_pii_version bigint,
            p_old_subjects text[], p_sealed_name bytea, p_sealed_email bytea, p_data_key_version bigint,
            p_expires_at timestamptz, p_link_hash bytea, p_subject_mac bytea, p_subject_mac_version bigint)
        RETURNS text
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            IF cardinality(p_old_subjects) > 0 AND (
                EXISTS (SELECT 1 FROM {schema}.verification_sessions s WHERE s.subject_ref = ANY (p_old_subjects))
                OR EXISTS (SELECT 1 FROM {schema}.templates t WHERE t.tenant_id = p_tenant AND t.subject_ref = ANY (p_old_subjects))
                OR EXISTS (SELECT 1 FROM {schema}.verification_attempts a WHERE a.tenant_id = p_tenant AND a.subject_ref = ANY (p_old_subjects))) THEN
                RETURN 'move_first';
            END IF;
            INSERT INTO {schema}.verification_sessions (id, tenant_id, subject_ref, pii_version, sealed_name, sealed_email, data_key_version,
                expires_at, subject_mac, subject_mac_version)
            VALUES (p_session, p_tenant, p_subject, p_pii_version, p_sealed_name, p_sealed_email, p_data_key_version, p_expires_at,
                p_subject_mac, p_subject_mac_version);
            INSERT INTO {schema}.gateway_links (link_hash, tenant_id, session_id, expires_at)
            VALUES (p_link_hash, p_tenant, p_session, p_expires_at);
            RETURN 'created';
        END
        $$;

        -- Migration 27's OpenGateway, returning the session with its MACs (a new name: the
        -- result columns change).
        CREATE FUNCTION {schema}.open_gateway_link(p_tenant uuid, p_link_hash bytea, p_now timestamptz)
        RETURNS TABLE (
            o_id uuid, o_subject_ref text, o_pii_version integer, o_sealed_name bytea, o_sealed_email bytea,
            o_data_key_version integer, o_expires_at timestamptz, o_link_opened_at timestamptz, o_notice_version text,
            o_consented_at timestamptz, o_outcome text, o_confidence text, o_biometric_key_version integer,
            o_completed_at timestamptz, o_created_at timestamptz, o_record_mac bytea, o_record_mac_version integer,
            o_subject_mac bytea, o_subject_mac_version integer, o_status text)
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        DECLARE
            v_session uuid;
            v_used boolean;
            v_expired boolean;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            RETURN QUERY
            UPDATE {schema}.verification_sessions s SET link_opened_at = p_now
            WHERE s.id = (
                SELECT l.session_id FROM {schema}.gateway_links l
                WHERE l.link_hash = p_link_hash AND l.tenant_id = p_tenant AND l.opened_at IS NULL AND l.expires_at > p_now
                FOR UPDATE)
            RETURNING s.id, s.subject_ref, s.pii_version, s.sealed_name, s.sealed_email, s.data_key_version, s.expires_at,
                s.link_opened_at, s.notice_version, s.consented_at, s.outcome, s.confidence, s.biometric_key_version,
                s.completed_at, s.created_at, s.record_mac, s.record_mac_version, s.subject_mac, s.subject_mac_version, 'opened'::text;
            IF FOUND THEN
                UPDATE {schema}.gateway_links l SET opened_at = p_now WHERE l.link_hash = p_link_hash;
                RETURN;
            END IF;
            SELECT l.session_id, l.opened_at IS NOT NULL, l.expires_at <= p_now INTO v_session, v_used, v_expired
            FROM {schema}.gateway_links l WHERE l.link_hash = p_link_hash AND l.tenant_id = p_tenant;
            o_status := CASE WHEN v_session IS NULL THEN 'unknown' WHEN v_used THEN 'already_used'
                WHEN v_expired THEN 'expired' ELSE 'session_not_found' END;
            o_id := v_session;
            RETURN NEXT;
        END
        $$;

        REVOKE ALL ON FUNCTION {schema}.session_and_sealed_templates(uuid, uuid, timestamptz, timestamptz) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.complete_enrolment(uuid, uuid, text, bigint, bigint, bytea, timestamptz, bytea, bigint, bytea, bigint) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.complete_verification(uuid, uuid, text, text, bigint, timestamptz, timestamptz, bigint, bytea, bigint) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.record_consent(uuid, uuid, text, timestamptz, bytea, bigint) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.open_gateway_link(uuid, bytea, timestamptz) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.create_session(uuid, uuid, text, bigint, text[], bytea, bytea, bigint, timestamptz, bytea, bytea, bigint) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.session_and_sealed_templates(uuid, uuid, timestamptz, timestamptz) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.complete_enrolment(uuid, uuid, text, bigint, bigint, bytea, timestamptz, bytea, bigint, bytea, bigint) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.complete_verification(uuid, uuid, text, text, bigint, timestamptz, timestamptz, bigint, bytea, bigint) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.record_consent(uuid, uuid, text, timestamptz, bytea, bigint) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.open_gateway_link(uuid, bytea, timestamptz) TO {service};
        GRANT EXECUTE ON FUNCTION {schema}.create_session(uuid, uuid, text, bigint, text[], bytea, bytea, bigint, timestamptz, bytea, bytea, bigint) TO {service};
        """),
        Migration(version: 34, summary: "a template's MAC is withdrawn when its row is deleted or changed, and a row carrying a withdrawn MAC cannot be written again", sql: """
        -- A template's MAC proves Custos wrote the row once, not that it is still the subject's:
        -- a copy of a row taken before an erasure, a retention run, a replacing re-enrolment, a
        -- pii move or an overlap's migration, put back by the service role, passed its check
        -- (helper-80 F3). From now on every MAC a row loses — deleted, or any column the MAC
        -- covers changed — is listed here by the owner's triggers, and a row that carries a
        -- listed MAC cannot be inserted or updated into the table. The service role can neither
        -- read nor change the list, nor turn the triggers off (that needs the owner, or a
        -- superuser's session_replication_role). This build never writes a withdrawn MAC again
        -- unless the very same token is enrolled again for the same subject and version (the
        -- same features sent again, or features so close that every symbol is the same): refused
        -- with SQLSTATE \(TemplateStore.withdrawnMACState), which Enrol reports as such. The
        -- previous build's pii move does (it changed a template's reference before sealing it
        -- again): upgrade with no pii rotation in progress (docs/operations.md). A row
        -- without a MAC (written before migration 33) is listed by a digest of what a MAC would
        -- cover instead, for `custos db seal-records`. Rows deleted before this migration were not
        -- listed.
        CREATE TABLE withdrawn_template_macs (
            record_mac bytea PRIMARY KEY,
            tenant_id uuid NOT NULL,
            key_version integer NOT NULL,
            withdrawn_at timestamptz NOT NULL DEFAULT now()
        );
        -- No policy and no grant: only the owner's functions below read or write it.
        ALTER TABLE withdrawn_template_macs ENABLE ROW LEVEL SECURITY;
        CREATE FUNCTION {schema}.unsealed_template_digest(p_tenant uuid, p_subject text, p_version integer, p_token bytea) RETURNS bytea
            LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog, pg_temp
            AS $$ SELECT sha256(convert_to('custos/unsealed-template/v1', 'UTF8') || uuid_send(p_tenant)
                || int4send(octet_length(convert_to(p_subject, 'UTF8'))) || convert_to(p_subject, 'UTF8')
                || int4send(p_version) || p_token) $$;
        -- Deletions are listed once per statement (an overlap's end or a retention batch deletes
        -- many rows: one INSERT … SELECT, not one per row); still before the deleting
        -- transaction commits. Every deleted row, an overlap's end's too: a version withdrawn
        -- whole instead (skipping its rows) let a writer that withdrew a live version delete
        -- rows unlisted and put them back from an older snapshot.
        CREATE FUNCTION {schema}.withdraw_deleted_template_macs() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
        BEGIN
            INSERT INTO withdrawn_template_macs (record_mac, tenant_id, key_version)
            SELECT coalesce(g.record_mac, unsealed_template_digest(g.tenant_id, g.subject_ref, g.key_version, g.token)), g.tenant_id, g.key_version
            FROM gone g
            ON CONFLICT (record_mac) DO NOTHING;
            RETURN NULL;
        END $$;
        -- Changes are listed before the row changes: a later row of the same statement already
        -- finds the MAC listed.
        CREATE FUNCTION {schema}.withdraw_changed_template_mac() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
        BEGIN
            INSERT INTO withdrawn_template_macs (record_mac, tenant_id, key_version)
            VALUES (coalesce(OLD.record_mac, unsealed_template_digest(OLD.tenant_id, OLD.subject_ref, OLD.key_version, OLD.token)),
                OLD.tenant_id, OLD.key_version)
            ON CONFLICT (record_mac) DO NOTHING;
            RETURN NEW;
        END $$;
        -- The check goes through the list's primary key, not a snapshot: a withdrawal that
        -- committed after the writer's snapshot was taken counts, and one still in flight is
        -- waited for (helper-88: a repeatable-read snapshot, or a withdrawal held uncommitted
        -- behind a lock the writer took, let a snapshot check pass). It runs after the row (and
        -- its primary key, which may itself have waited for the deleting transaction) is in
        -- place. The probe row is undone with its subtransaction.
        CREATE FUNCTION {schema}.refuse_withdrawn_template_mac() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
        BEGIN
            BEGIN
                INSERT INTO withdrawn_template_macs (record_mac, tenant_id, key_version) VALUES (NEW.record_mac, NEW.tenant_id, NEW.key_version);
                RAISE EXCEPTION USING ERRCODE = 'CS000';
            EXCEPTION
                WHEN unique_violation OR serialization_failure THEN
                    RAISE EXCEPTION 'this template''s MAC was withdrawn (its row was deleted or replaced): it cannot be written again'
                        USING ERRCODE = '\(TemplateStore.withdrawnMACState)';
                WHEN SQLSTATE 'CS000' THEN
                    NULL;
            END;
            RETURN NULL;
        END $$;
        REVOKE ALL ON FUNCTION {schema}.unsealed_template_digest(uuid, text, integer, bytea) FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.withdraw_deleted_template_macs() FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.withdraw_changed_template_mac() FROM PUBLIC;
        REVOKE ALL ON FUNCTION {schema}.refuse_withdrawn_template_mac() FROM PUBLIC;
        CREATE TRIGGER templates_withdraw_deleted AFTER DELETE ON templates REFERENCING OLD TABLE AS gone
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.withdraw_deleted_template_macs();
        -- Any covered column: a row moved to another subject before an erasure (so that the
        -- erasure misses it) and moved back afterwards is refused on the way back. Not when only
        -- last_used_at, enrolled_at, pii_version or changed_xid change (Verify's touch).
        CREATE TRIGGER templates_withdraw_changed BEFORE UPDATE ON templates FOR EACH ROW
            WHEN ((OLD.tenant_id, OLD.subject_ref, OLD.key_version, OLD.token, OLD.record_mac, OLD.record_mac_version)
                IS DISTINCT FROM (NEW.tenant_id, NEW.subject_ref, NEW.key_version, NEW.token, NEW.record_mac, NEW.record_mac_version))
            EXECUTE FUNCTION {schema}.withdraw_changed_template_mac();
        CREATE TRIGGER templates_refuse_withdrawn_insert AFTER INSERT ON templates FOR EACH ROW
            WHEN (NEW.record_mac IS NOT NULL) EXECUTE FUNCTION {schema}.refuse_withdrawn_template_mac();
        CREATE TRIGGER templates_refuse_withdrawn_update AFTER UPDATE ON templates FOR EACH ROW
            WHEN (NEW.record_mac IS NOT NULL AND (OLD.tenant_id, OLD.subject_ref, OLD.key_version, OLD.token, OLD.record_mac, OLD.record_mac_version)
                IS DISTINCT FROM (NEW.tenant_id, NEW.subject_ref, NEW.key_version, NEW.token, NEW.record_mac, NEW.record_mac_version))
            EXECUTE FUNCTION {schema}.refuse_withdrawn_template_mac();
        -- For `custos db seal-records`: a template without a MAC that carried a withdrawn one,
        -- or whose content was listed by its digest, was put back after its removal, and is
        -- deleted again rather than sealed. It tells the service role whether a MAC, or a row's
        -- content, was ever withdrawn: what a refused insert of that row tells it too.
        CREATE FUNCTION {schema}.template_withdrawn(p_mac bytea, p_tenant uuid, p_subject text, p_version integer, p_token bytea) RETURNS boolean
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {schema}, pg_temp
            AS $$ SELECT EXISTS (SELECT 1 FROM withdrawn_template_macs w
                WHERE w.record_mac = p_mac OR w.record_mac = unsealed_template_digest(p_tenant, p_subject, p_version, p_token)) $$;
        REVOKE ALL ON FUNCTION {schema}.template_withdrawn(bytea, uuid, text, integer, bytea) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.template_withdrawn(bytea, uuid, text, integer, bytea) TO {service};
        """),
        Migration(version: 35, summary: "a consent recorded again for the same notice keeps its first time", sql: """
        -- Migration 33's RecordConsent overwrote consented_at (and its MAC) on every repeat: the
        -- evidence of when the candidate consented moved with each retry (helper-91). A new
        -- name, so that instances of the previous build keep the function they call during a
        -- rolling upgrade.
        CREATE FUNCTION {schema}.record_consent_once(p_tenant uuid, p_session uuid, p_notice_version text, p_now timestamptz,
            p_session_mac bytea, p_session_mac_version bigint)
        RETURNS text
        LANGUAGE plpgsql SECURITY INVOKER AS $$
        DECLARE
            v_why text;
        BEGIN
            PERFORM set_config('app.tenant_id', p_tenant::text, true);
            UPDATE {schema}.verification_sessions s SET notice_version = p_notice_version, consented_at = p_now,
                record_mac = p_session_mac, record_mac_version = p_session_mac_version
            WHERE s.id = p_session AND s.outcome IS NULL AND s.expires_at > p_now AND s.link_opened_at IS NOT NULL
                AND (s.consented_at IS NULL OR s.notice_version IS DISTINCT FROM p_notice_version)
                AND NOT EXISTS (SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session);
            IF FOUND THEN
                RETURN 'consented';
            END IF;
            SELECT CASE WHEN s.outcome IS NOT NULL OR EXISTS (
                    SELECT 1 FROM {schema}.session_completions c WHERE c.tenant_id = p_tenant AND c.session_id = p_session) THEN 'completed'
                WHEN s.expires_at <= p_now THEN 'expired'
                WHEN s.link_opened_at IS NULL THEN 'not_opened'
                WHEN s.consented_at IS NOT NULL AND s.notice_version = p_notice_version THEN 'already_consented'
                -- Changed since the UPDATE's snapshot (this SELECT takes its own): the link opened,
                -- or another notice consented, meanwhile (helper-93).
                ELSE 'changed' END
            INTO v_why FROM {schema}.verification_sessions s WHERE s.id = p_session;
            RETURN coalesce(v_why, 'not_found');
        END
        $$;
        REVOKE ALL ON FUNCTION {schema}.record_consent_once(uuid, uuid, text, timestamptz, bytea, bigint) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION {schema}.record_consent_once(uuid, uuid, text, timestamptz, bytea, bigint) TO {service};
        """),
    ]

    /// The newest schema version this build knows.
    public static var latestVersion: Int { all.map(\.version).max() ?? 0 }

    /// Refuses a schema older than this build: every call that needs a newer table or function
    /// would otherwise fail with an internal error once the service is up (seen: Enrol against
    /// a schema without migration 23's functions). A newer schema is fine: migrations only add,
    /// so an instance of the previous version keeps working during a rolling upgrade (one
    /// exception, migration 34: the previous build's `pii` move fails; docs/operations.md).
    /// - Parameter database: connected as the service role.
    /// - Throws: ``StorageError/configuration(_:)`` naming both versions and the command to run.
    public static func requireCurrent(_ database: Database) async throws {
        let applied: Int?
        do {
            applied = try await database.withTransaction(context: "read schema version") { connection in
                try await connection.query("SELECT max(version)::int8 FROM schema_migrations", logger: Database.quiet).collect().first?.decode(Int?.self) ?? nil
            }
        } catch StorageError.permissionDenied, StorageError.query(sqlState: "42P01", context: _) {
            // Before migration 23 the service role may not read the table; before any, there is none.
            applied = nil
        }
        guard let applied, applied >= latestVersion else {
            let found = applied.map { "is at version \($0)" } ?? "is older than version 23"
            throw StorageError.configuration("the database schema \(found); this build needs version \(latestVersion): run `custos db migrate` (scripts/setup does) before starting")
        }
    }

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
            try await connection.run("SELECT pg_advisory_xact_lock(hashtext(\("custos-migrations:" + schema)))")
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

    /// Splits on `;` at line ends, except inside a `$$`-quoted function body; the migrations
    /// contain no `;` at a line end inside literals.
    static func splitStatements(_ sql: String) -> [String] {
        var statements = [String]()
        var current = ""
        for piece in sql.components(separatedBy: ";\n") {
            current += current.isEmpty ? piece : ";\n" + piece
            // An odd number of `$$` so far: inside a body, whose statements end in `;` too.
            if current.components(separatedBy: "$$").count % 2 == 1 {
                statements.append(current)
                current = ""
            }
        }
        if !current.isEmpty { statements.append(current) }
        return statements
            .map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .map { $0.hasSuffix(";") ? String($0.dropLast()) : $0 }
            .map { statement in
                statement.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("--") }.joined(separator: "\n")
            }
            .filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
    }
}

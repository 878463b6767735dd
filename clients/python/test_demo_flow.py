#!/usr/bin/env python3
"""Runs the Custos demo flow from Python (grpcio, mutual TLS) and checks every answer; then
checks that webhook deliveries verify with the stock `standardwebhooks` package (v1) and
`cryptography`'s Ed25519 (v1a), and that the server refuses what it must.

Plain Python (no pytest): each check prints `ok: …` or `FAIL: …`; the last line is
`test_demo_flow: N passed, M failed`, and --results FILE gets `N M` for scripts/python-client-test.
The flow's checks depend on each other: after one fails, the rest of the flow is counted as
failed ("not run"); the refusal checks run regardless.

Known server deviations: where the server answers something the protos' comments rule out and
the deviation is known and reported (see KNOWN_DEVIATIONS), the check accepts exactly that
wrong answer, prints `DEVIATION …`, and lists it before the summary, so the flow beyond it is
still checked. With CUSTOS_PY_STRICT=1 a deviation fails its check instead. Once the server is
fixed, the documented answer passes and the DEVIATION lines disappear by themselves.

Usage: test_demo_flow.py [--address HOST:PORT] [--config config.json] [--results FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import time
import traceback
import uuid

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

import custos_client as cc
from custos_client import (admin_pb2, api_keys_pb2, common_pb2, health_pb2, verification_pb2,
                           webhooks_pb2)
from demo_flow import SCOPES, DemoFlow, color_name

GREEN = common_pb2.DECISION_COLOR_GREEN
RED = common_pb2.DECISION_COLOR_RED
KNOWN_CONFIDENCES = {common_pb2.CONFIDENCE_LOW, common_pb2.CONFIDENCE_MEDIUM, common_pb2.CONFIDENCE_HIGH}
TIMEOUT = 30.0
STRICT = os.environ.get("CUSTOS_PY_STRICT", "1") == "1"

# What the server answers today where the protos say otherwise (found by this test; reported,
# not patched here).
KNOWN_DEVIATIONS = {
    "D1": "domain errors thrown by handlers (VerificationError, FeatureVectorError, CustodyError, "
          "StorageError) reach the client as UNKNOWN with an empty message: the interceptor that maps "
          "them (StatusMapping) never sees them, so the promised FAILED_PRECONDITION / NOT_FOUND / "
          "INVALID_ARGUMENT is lost (and custos_rpc_requests_total counts these calls as code=\"ok\")",
    "D2": "the SESSION_COMPLETED webhook body has \"type\": \"session.completed\"; webhooks.proto "
          "names the event \"verification.session.completed\"",
    "D4": "KeyVersion.created_at is never set (Admin.RotateKey's activated versions, Admin.ListKeys), "
          "while Tenant and APIKeyInfo carry theirs",
    "D3": "APIKeys.WhoAmI with a front-end certificate (custos-tenant, no API key) succeeds with an "
          "empty key_id and no scopes; api_keys.proto says FAILED_PRECONDITION",
}


# ------------------------------------------------------------------ a tiny runner
class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.flow_broken: str | None = None
        self.deviations: list[str] = []

    def deviation(self, key: str, observed: str) -> None:
        """A known server deviation met: fails the check under CUSTOS_PY_STRICT=1, else noted."""
        if STRICT:
            raise AssertionError(f"{key} (strict): {observed}")
        self.deviations.append(f"{key}: {observed}")
        print(f"   DEVIATION {key}: {observed}")

    def check(self, name: str, fn, *, flow: bool = True):
        """Runs fn(); an exception (assertion, RpcError, …) fails the check. A failed flow
        check makes the later flow checks fail as "not run"."""
        if flow and self.flow_broken:
            self.failed += 1
            print(f"FAIL: {name} (not run: {self.flow_broken!r} failed)")
            return None
        try:
            value = fn()
        except Exception as error:  # noqa: BLE001 — every failure is reported, none is fatal
            self.failed += 1
            if isinstance(error, grpc.RpcError):
                why = f"{error.code().name}: {error.details()}"
            else:
                why = f"{type(error).__name__}: {error}"
            print(f"FAIL: {name}\n      {why}")
            if not isinstance(error, (AssertionError, grpc.RpcError)):
                traceback.print_exc(limit=3)
            if flow:
                self.flow_broken = name
            return None
        self.passed += 1
        print(f"ok: {name}")
        return value


def expect_code(expected: grpc.StatusCode, call, *args, runner: Runner | None = None, what: str = "",
                **kwargs) -> str:
    """Calls a stub method and asserts it fails with `expected`; returns the details. With a
    runner, deviation D1 (UNKNOWN with an empty message) is accepted as a known deviation."""
    try:
        call(*args, timeout=TIMEOUT, **kwargs)
    except grpc.RpcError as error:
        check_refusal(expected, error.code(), error.details() or "", runner, what)
        return error.details() or ""
    raise AssertionError(f"expected {expected.name}, the call succeeded")


def check_refusal(expected: grpc.StatusCode, code: grpc.StatusCode, details: str,
                  runner: Runner | None, what: str) -> None:
    if code == expected:
        assert details, f"{code.name} without a message"
        return
    if runner is not None and code == grpc.StatusCode.UNKNOWN and not details:
        runner.deviation("D1", f"{what}: expected {expected.name}, got UNKNOWN with no message")
        return
    raise AssertionError(f"expected {expected.name}, got {code.name}: {details}")


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def near_now(ts, seconds: float = 300) -> bool:
    return abs(ts.ToSeconds() - time.time()) <= seconds


def assert_session(s, flow: DemoFlow):
    """The three answers of a consented session."""
    c = s.created
    assert is_uuid(c.session_id), f"session id {c.session_id!r} is not a UUID"
    assert re.fullmatch(r"cgl_[A-Za-z0-9_-]{43}", c.gateway_link), "gateway link is not cgl_ + 43 base64url"
    assert c.HasField("expires_at") and 23 * 3600 < c.expires_at.ToSeconds() - time.time() <= 24 * 3600 + 60, \
        f"session expires at {c.expires_at.ToJsonString()}, not in about 24 h"
    o = s.opened
    assert o.session_id == c.session_id, f"OpenGateway names session {o.session_id}, not {c.session_id}"
    assert o.notice_version, "OpenGateway returned no notice version"
    assert o.HasField("expires_at"), "OpenGateway returned no expires_at"
    assert s.consent.HasField("consented_at") and near_now(s.consent.consented_at), "consented_at missing or not now"


def assert_decision(d, color: int):
    assert d.color == color, f"decision {color_name(d.color)}, expected {color_name(color)}"
    assert d.confidence in KNOWN_CONFIDENCES, f"confidence {d.confidence} is not LOW/MEDIUM/HIGH"


# ------------------------------------------------------------------ the flow
def run_flow(t: Runner, flow: DemoFlow, officer: cc.Clients) -> None:
    r = flow.result

    def health():
        response = flow.frontend.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, f"health {response.status}"
    t.check("grpc.health.v1.Health/Check over mTLS: SERVING", health)

    def tenant():
        tn = flow.create_tenant()
        assert is_uuid(tn.tenant_id), f"tenant id {tn.tenant_id!r} is not a UUID"
        assert tn.label == flow.label and not tn.disabled, (tn.label, tn.disabled)
        assert tn.HasField("created_at") and near_now(tn.created_at), "created_at missing or not now"
        p = tn.policy
        assert 0 < p.amber_threshold < p.green_threshold <= 1, f"thresholds {p.amber_threshold} / {p.green_threshold}"
        # A new tenant's biometric version is quaternary: the thresholds shown are that format's
        # defaults (2203 and 2096 of 4,096 positions), not compact's 0.170 / 0.138.
        assert p.thresholds_format == admin_pb2.BIOMETRIC_TOKEN_FORMAT_QUATERNARY, f"thresholds format {p.thresholds_format}"
        assert abs(p.green_threshold - 2203 / 4096) < 1e-9 and abs(p.amber_threshold - 2096 / 4096) < 1e-9, \
            f"thresholds {p.amber_threshold} / {p.green_threshold} are not the quaternary defaults"
        assert p.retention_days >= 1 and p.tokenization_budget_per_minute >= 1, str(p)
    t.check("Admin.CreateTenant: a UUID, the label, enabled, the quaternary default thresholds", tenant)

    def api_key():
        response = flow.issue_api_key()
        info = response.info
        assert re.fullmatch(r"[0-9A-Za-z]{11}", info.key_id), f"key id {info.key_id!r} is not 11 base62"
        assert re.fullmatch(rf"custos_[a-z0-9]+_{info.key_id}_[0-9A-Za-z]+", response.api_key), \
            "api key is not custos_<env>_<keyid>_<secret><checksum> (value not shown)"
        assert info.tenant_id == flow.tenant_id, info.tenant_id
        assert sorted(info.scopes) == sorted(SCOPES), list(info.scopes)
        assert info.label == "python demo", info.label
        assert info.HasField("created_at") and near_now(info.created_at), "created_at missing or not now"
        assert info.HasField("expires_at") and abs(info.expires_at.ToSeconds() - time.time() - 3600) < 120, \
            "expires_at is not in about 1 h"
        assert not info.HasField("revoked_at"), "a new key is revoked"
    t.check("Admin.IssueAPIKey: custos_<env>_<keyid>_…, the tenant, the scopes, ttl 1 h", api_key)

    def whoami():
        w = flow.whoami()
        assert w.key_id == r.api_key_info.key_id and w.tenant_id == flow.tenant_id, (w.key_id, w.tenant_id)
        assert sorted(w.scopes) == sorted(SCOPES), list(w.scopes)
    t.check("APIKeys.WhoAmI with the key: its key id, tenant and scopes", whoami)

    def secret():
        s = flow.create_webhook_secret()
        assert s.version >= 1, s.version
        assert s.secret.startswith("whsec_"), "secret is not whsec_…"
        raw = b64(s.secret.removeprefix("whsec_"))
        assert 32 <= len(raw) <= 64, f"secret is {len(raw)} bytes, not 32..64"
    t.check("Webhooks.CreateSecret: whsec_ + base64 of 32..64 bytes", secret)

    def ed25519():
        k = flow.create_ed25519_key()
        assert k.version >= 1, k.version
        assert k.public_key.startswith("whpk_"), k.public_key
        raw = b64(k.public_key.removeprefix("whpk_"))
        assert len(raw) == 32, f"public key is {len(raw)} bytes"
        Ed25519PublicKey.from_public_bytes(raw)
    t.check("Webhooks.CreateEd25519Key: whpk_ + base64 of a 32-byte Ed25519 key", ed25519)

    t.check("synthetic faces: 512 finite floats each", lambda: assert_faces(flow.make_faces()))

    def enrol():
        e = flow.enrol(flow.face)
        r.enrolment = e
        assert_session(e.session, flow)
        assert re.fullmatch(r"v\d+:[0-9a-f]{64}", e.response.subject_reference), e.response.subject_reference
        assert e.response.key_version == 1, f"key version {e.response.key_version}"
    t.check("CreateSession → OpenGateway → RecordConsent → Enrol: reference v<n>:<64 hex>, key v1", enrol)

    def probe():
        v = flow.verify(flow.probe, "the probe (same face, noisy)")
        r.probe = v
        assert_session(v.session, flow)
        assert_decision(v.response.decision, GREEN)
    t.check("Verify the noisy probe in a new session: GREEN", probe)

    def get_session():
        g = flow.get_session(r.probe.session.session_id)
        r.completed_session = g
        assert g.session_id == r.probe.session.session_id, g.session_id
        assert g.status == verification_pb2.SESSION_STATUS_COMPLETED, verification_pb2.SessionStatus.Name(g.status)
        assert g.outcome == verification_pb2.SESSION_OUTCOME_DECIDED, verification_pb2.SessionOutcome.Name(g.outcome)
        assert_decision(g.result, GREEN)
        assert g.result.confidence == r.probe.response.decision.confidence, "GetSession confidence differs from Verify's"
        assert g.key_version == 1, g.key_version
        assert g.notice_version == r.probe.session.opened.notice_version, g.notice_version
        for f in ("created_at", "expires_at", "consented_at", "completed_at"):
            assert g.HasField(f), f"{f} missing"
    t.check("GetSession of the probe's session: COMPLETED, DECIDED, GREEN, key v1", get_session)

    def impostor():
        v = flow.verify(flow.impostor, "an impostor")
        r.impostor = v
        assert_session(v.session, flow)
        assert_decision(v.response.decision, RED)
    t.check("Verify an unrelated impostor in a new session: RED", impostor)

    def one_outcome():
        # The probe's session is completed: a second Verify in it must be refused.
        expect_code(grpc.StatusCode.FAILED_PRECONDITION, flow.frontend.verification.Verify,
                    verification_pb2.VerifyRequest(session_id=r.probe.session.session_id, features=flow.probe),
                    metadata=flow.tenant_metadata(), runner=t, what="Verify in a completed session")
    t.check("Verify again in the completed session: FAILED_PRECONDITION (one outcome per session)",
            one_outcome, flow=False)

    def delivery():
        d = flow.sign_delivery(r.probe.session.session_id)
        r.delivery = d
        assert re.fullmatch(r"msg_[A-Za-z0-9_-]+", d.message_id), d.message_id
        assert abs(time.time() - d.timestamp) <= 60, f"timestamp {d.timestamp} is not fresh"
        body = json.loads(d.body)
        assert isinstance(body, dict) and isinstance(body.get("data"), dict), d.body
        if body.get("type") == "session.completed":
            t.deviation("D2", 'SignDelivery body "type" is "session.completed", not "verification.session.completed"')
        else:
            assert body.get("type") == "verification.session.completed", f"type {body.get('type')!r}"
        data = body["data"]
        decision = r.probe.response.decision
        assert data.get("session_id") == r.probe.session.session_id, data
        assert data.get("state") == "completed", data
        assert data.get("outcome") == color_name(decision.color).lower(), data
        assert data.get("confidence") == common_pb2.Confidence.Name(decision.confidence) \
            .removeprefix("CONFIDENCE_").lower(), data
        assert abs(_iso_seconds(body["timestamp"]) - d.timestamp) <= 60, body["timestamp"]
        for secret_like in ("whsec_", "custos_", "features", "subject", "email", "name"):
            assert secret_like not in d.body.decode(), f"the body mentions {secret_like!r}"
        entries = d.signature.split(" ")
        assert all(re.fullmatch(r"v1a?,[A-Za-z0-9+/]+=*", e) for e in entries), d.signature
        assert any(e.startswith("v1,") for e in entries) and any(e.startswith("v1a,") for e in entries), \
            f"expected both v1 and v1a entries, got {[e.split(',')[0] for e in entries]}"
    t.check("SignDelivery(SESSION_COMPLETED): msg_ id, fresh timestamp, JSON body, v1 and v1a entries",
            delivery)

    def signature_counts():
        # One entry per ACTIVE or RETIRING version of each webhook purpose (rotation overlap).
        keys = officer.admin.ListKeys(admin_pb2.AdminListKeysRequest(tenant_id=flow.tenant_id),
                                      timeout=TIMEOUT).keys
        live = (common_pb2.KEY_STATE_ACTIVE, common_pb2.KEY_STATE_RETIRING)
        want_v1 = sum(1 for k in keys if k.purpose == common_pb2.KEY_PURPOSE_WEBHOOK and k.state in live)
        want_v1a = sum(1 for k in keys if k.purpose == common_pb2.KEY_PURPOSE_WEBHOOK_ED25519 and k.state in live)
        entries = [e.split(",")[0] for e in r.delivery.signature.split(" ")]
        got = (entries.count("v1"), entries.count("v1a"))
        assert got == (want_v1, want_v1a), \
            f"signature has {got[0]} v1 / {got[1]} v1a entries; ListKeys has {want_v1} / {want_v1a} live versions"
        active = [k for k in keys if k.purpose == common_pb2.KEY_PURPOSE_WEBHOOK and k.state == common_pb2.KEY_STATE_ACTIVE]
        assert [k.version for k in active] == [r.webhook_secret.version], \
            f"active v1 versions {[k.version for k in active]}, CreateSecret said {r.webhook_secret.version}"
    t.check("the signature carries one entry per live webhook key version (Admin.ListKeys)", signature_counts)

    def standard_webhooks():
        d = r.delivery
        headers = {"webhook-id": d.message_id, "webhook-timestamp": str(d.timestamp),
                   "webhook-signature": d.signature}
        payload = Webhook(flow.webhook_secret).verify(d.body, headers)
        assert payload == json.loads(d.body), "verify() returned another payload"
        for tampered_body, tampered_headers in (
                (d.body + b" ", headers),
                (d.body, {**headers, "webhook-id": d.message_id + "x"}),
                (d.body, {**headers, "webhook-timestamp": str(d.timestamp + 1)})):
            try:
                Webhook(flow.webhook_secret).verify(tampered_body, tampered_headers)
            except WebhookVerificationError:
                continue
            raise AssertionError("a tampered delivery verified")
    t.check("v1 verifies with standardwebhooks' Webhook(secret).verify; tampering is caught",
            standard_webhooks)

    def ed25519_verify():
        d = r.delivery
        key = Ed25519PublicKey.from_public_bytes(b64(r.ed25519_key.public_key.removeprefix("whpk_")))
        content = f"{d.message_id}.{d.timestamp}.".encode() + d.body
        signatures = [b64(e.split(",", 1)[1]) for e in d.signature.split(" ") if e.startswith("v1a,")]
        verified = 0
        for sig in signatures:
            assert len(sig) == 64, f"v1a signature is {len(sig)} bytes"
            try:
                key.verify(sig, content)
                verified += 1
            except InvalidSignature:
                pass
        assert verified == 1, f"{verified} of {len(signatures)} v1a signatures verify with the new public key"
        good = next(s for s in signatures if _verifies(key, s, content))
        assert not _verifies(key, good, content + b" "), "a tampered body verified"
    t.check("v1a verifies with cryptography's Ed25519 over {id}.{timestamp}.{body}; tampering is caught",
            ed25519_verify)

    def rotate():
        rot = flow.rotate_biometric_keys()
        purposes = sorted(common_pb2.KeyPurpose.Name(k.purpose) for k in rot.activated)
        assert purposes == ["KEY_PURPOSE_BIO_PRF", "KEY_PURPOSE_BIO_SEED"], purposes
        for k in rot.activated:
            assert k.version == 2, f"{common_pb2.KeyPurpose.Name(k.purpose)} v{k.version}"
            assert k.state == common_pb2.KEY_STATE_ACTIVE, common_pb2.KeyState.Name(k.state)
            assert re.fullmatch(r"[0-9a-f]{6}", k.check_value), k.check_value
            assert k.root_kek_version >= 1, f"root_kek_version {k.root_kek_version}"
            if k.HasField("created_at"):
                assert near_now(k.created_at), f"created_at {k.created_at.ToJsonString()} is not now"
            else:
                t.deviation("D4", f"RotateKey: {common_pb2.KeyPurpose.Name(k.purpose)} v{k.version} has no created_at")
        r.rotation = rot
    t.check("Admin.RotateKey(BIO_SEED): BIO_SEED and BIO_PRF v2 ACTIVE", rotate)

    def old_versions_retiring():
        keys = flow.list_biometric_keys()
        r.overlap_keys = keys
        for purpose in (common_pb2.KEY_PURPOSE_BIO_SEED, common_pb2.KEY_PURPOSE_BIO_PRF):
            states = {k.version: k.state for k in keys if k.purpose == purpose}
            assert states.get(1) == common_pb2.KEY_STATE_RETIRING and states.get(2) == common_pb2.KEY_STATE_ACTIVE, \
                f"{common_pb2.KeyPurpose.Name(purpose)}: " + \
                ", ".join(f"v{v} {common_pb2.KeyState.Name(s)}" for v, s in sorted(states.items()))
        ends = {k.retiring_until.seconds for k in keys if k.version == 1}
        assert len(ends) == 1, f"bio-seed and bio-prf v1 end their overlap at different times: {sorted(ends)}"
        assert ends.pop() > time.time() + 86_400, "the overlap (default 30 days) ends within a day"
    t.check("Admin.ListKeys after the rotation: biometric v1 RETIRING (one end for both keys), v2 ACTIVE",
            old_versions_retiring)

    def after_rotation():
        v = flow.verify(flow.probe, "the probe after the rotation (old enrolment, v1)")
        r.after_rotation = v
        assert_session(v.session, flow)
        assert_decision(v.response.decision, GREEN)
        g = flow.get_session(v.session.session_id)
        r.after_rotation_session = g
        assert g.key_version == 1, f"the old enrolment was compared under key version {g.key_version}"
    t.check("Verify the old enrolment after the rotation: GREEN, compared under v1", after_rotation)

    def migrated():
        v = flow.verify(flow.probe, "the probe again (the template is now under v2)")
        r.migrated_verify = v
        assert_session(v.session, flow)
        assert_decision(v.response.decision, GREEN)
        g = flow.get_session(v.session.session_id)
        r.migrated_session = g
        assert g.key_version == 2, f"the decision was reached under key version {g.key_version}"
    t.check("Verify again: GREEN under key v2 (the GREEN match moved the template, no re-enrolment)", migrated)


def _iso_seconds(text: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_faces(faces):
    import math
    for f in faces:
        assert len(f) == 512 and all(math.isfinite(x) for x in f), len(f)


def _verifies(key: Ed25519PublicKey, sig: bytes, content: bytes) -> bool:
    try:
        key.verify(sig, content)
        return True
    except InvalidSignature:
        return False


# ------------------------------------------------------------------ refusals
def run_refusals(t: Runner, config: cc.Config, address: str, officer: cc.Clients,
                 frontend: cc.Clients, flow: DemoFlow) -> None:
    ping = verification_pb2.PingRequest()

    def make_tenants():
        a = officer.admin.CreateTenant(admin_pb2.CreateTenantRequest(label=f"py-refusals-a-{flow.run_id}"),
                                       timeout=TIMEOUT).tenant.tenant_id
        b = officer.admin.CreateTenant(admin_pb2.CreateTenantRequest(label=f"py-refusals-b-{flow.run_id}"),
                                       timeout=TIMEOUT).tenant.tenant_id
        key_a = officer.admin.IssueAPIKey(admin_pb2.IssueAPIKeyRequest(
            tenant_id=a, scopes=list(SCOPES), label="refusals", ttl_seconds=600), timeout=TIMEOUT).api_key
        keys_only = officer.admin.IssueAPIKey(admin_pb2.IssueAPIKeyRequest(
            tenant_id=a, scopes=["keys"], label="refusals keys only", ttl_seconds=600), timeout=TIMEOUT).api_key
        return a, b, key_a, keys_only
    made = t.check("two more tenants (A, B) and API keys of A for the refusal checks", make_tenants, flow=False)
    if made is None:
        return
    a, b, key_a, keys_only = made

    t.check("front-end cert + custos-tenant A (no API key): Ping succeeds",
            lambda: frontend.verification.Ping(ping, metadata=cc.tenant(a), timeout=TIMEOUT), flow=False)
    t.check("front-end cert + API key of A: Ping succeeds",
            lambda: frontend.verification.Ping(ping, metadata=cc.bearer(key_a), timeout=TIMEOUT), flow=False)
    t.check("front-end cert, no API key and no custos-tenant: INVALID_ARGUMENT (it serves several tenants)",
            lambda: expect_code(grpc.StatusCode.INVALID_ARGUMENT, frontend.verification.Ping, ping), flow=False)
    t.check("API key of tenant A with custos-tenant of tenant B: PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, frontend.verification.Ping, ping,
                                metadata=cc.bearer(key_a) + cc.tenant(b)), flow=False)
    t.check("API key without the verification scope on Verification: PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, frontend.verification.Ping, ping,
                                metadata=cc.bearer(keys_only)), flow=False)
    t.check("a made-up API key: UNAUTHENTICATED",
            lambda: expect_code(grpc.StatusCode.UNAUTHENTICATED, frontend.verification.Ping, ping,
                                metadata=cc.bearer("custos_test_AAAAAAAAAAA_" + "B" * 40)), flow=False)
    t.check("officer cert on Verification (custos-tenant A): PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, officer.verification.Ping, ping,
                                metadata=cc.tenant(a)), flow=False)
    t.check("officer cert on Verification (no tenant metadata): PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, officer.verification.Ping, ping), flow=False)
    t.check("front-end cert on Admin: PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, frontend.admin.ListTenants,
                                admin_pb2.ListTenantsRequest()), flow=False)
    t.check("front-end cert + API key of A on Admin: PERMISSION_DENIED",
            lambda: expect_code(grpc.StatusCode.PERMISSION_DENIED, frontend.admin.ListTenants,
                                admin_pb2.ListTenantsRequest(), metadata=cc.bearer(key_a)), flow=False)

    def whoami_certificate():
        try:
            w = frontend.api_keys.WhoAmI(api_keys_pb2.WhoAmIRequest(), metadata=cc.tenant(a), timeout=TIMEOUT)
        except grpc.RpcError as error:
            check_refusal(grpc.StatusCode.FAILED_PRECONDITION, error.code(), error.details() or "", t,
                          "WhoAmI with a certificate")
            return
        assert not w.key_id and not w.scopes and w.tenant_id == a, str(w)
        t.deviation("D3", "APIKeys.WhoAmI with a certificate (no API key) succeeded with an empty key_id")
    t.check("front-end cert + custos-tenant on APIKeys.WhoAmI (no key to describe): FAILED_PRECONDITION",
            whoami_certificate, flow=False)

    def other_ca():
        with cc.connect(config, "other-client", address) as stranger:
            expect_code(grpc.StatusCode.UNAVAILABLE, stranger.verification.Ping, ping, metadata=cc.tenant(a))
            expect_code(grpc.StatusCode.UNAVAILABLE, stranger.admin.ListTenants, admin_pb2.ListTenantsRequest())
    t.check("a client certificate of another CA: UNAVAILABLE (handshake refused)", other_ca, flow=False)


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="HOST:PORT of custos serve (default: config.json's rpc host and port)")
    parser.add_argument("--config", help="config.json (default: $CUSTOS_CONFIG or <state>/config.json)")
    parser.add_argument("--results", help="write 'PASSED FAILED' to this file")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)

    config = cc.load_config(args.config)
    address = args.address or config.address
    t = Runner()
    print(f"python-client: Custos at {address}, CA {config.ca}")
    with cc.connect(config, "officer", address) as officer, \
            cc.connect(config, "frontend-demo", address) as frontend:
        ready = t.check("mutual TLS channel to the server is ready (officer certificate)",
                        lambda: cc.wait_ready(officer, timeout=20) or True)
        if ready:
            flow = DemoFlow(officer, frontend, seed=args.seed, out=lambda s: print("   " + s.strip("\n")))
            run_flow(t, flow, officer)
            run_refusals(t, config, address, officer, frontend, flow)

    if t.deviations:
        print(f"known server deviations met ({len(t.deviations)}; CUSTOS_PY_STRICT=1 fails on them):")
        for key in sorted({d.split(":")[0] for d in t.deviations}):
            print(f"  {key}: {KNOWN_DEVIATIONS[key]}")
    print(f"test_demo_flow: {t.passed} passed, {t.failed} failed")
    if args.results:
        with open(args.results, "w") as f:
            f.write(f"{t.passed} {t.failed}\n")
    return 0 if t.failed == 0 and t.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The Custos end-to-end demo over gRPC with mutual TLS, step by step.

Every step is a method of `DemoFlow` that prints what happens (for the demo) and returns the
server's answer (for clients/python/test_demo_flow.py, which checks every answer). `run()` does
them all in order:

  officer  : CreateTenant, IssueAPIKey (scopes verification, webhooks, keys)
  tenant   : WhoAmI; CreateSecret (v1, whsec_) and CreateEd25519Key (v1a, whpk_)
  faces    : a synthetic 512-d face, a slightly noisy probe of it, an unrelated impostor
  session  : CreateSession -> OpenGateway -> RecordConsent -> Enrol
  verify   : the probe in a new session (GREEN), the impostor in another (RED)
  webhook  : SignDelivery(SESSION_COMPLETED) for the probe's session
  rotation : Admin RotateKey(BIO_SEED) -> ListKeys: v1 RETIRING for the tenant's overlap
             -> Verify the old enrolment: GREEN, compared under v1 (GetSession: key version 1),
             which moved the template to v2 -> Verify again: GREEN under v2 (key version 2)

Tenant-facing calls use the front-end certificate (frontend-demo) plus the tenant's API key as
`authorization: Bearer ...`; Admin calls use the officer certificate of config.json.

Never printed: the API key, the webhook secret, the gateway links (single-use bearer strings),
PINs. Ids, key ids, versions and check values are printed instead.

Usage: demo_flow.py [--address HOST:PORT] [--config config.json]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import uuid
from dataclasses import dataclass, field

import grpc

import custos_client as cc
from custos_client import admin_pb2, common_pb2, verification_pb2, webhooks_pb2, api_keys_pb2

DIMENSION = 512
SCOPES = ("verification", "webhooks", "keys")


# ------------------------------------------------------------------ synthetic faces
def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def synthetic_face(seed: int, dimension: int = DIMENSION) -> list[float]:
    """A random unit vector: an identity's 'centre' (no numpy: random.gauss)."""
    rng = random.Random(seed)
    return unit([rng.gauss(0.0, 1.0) for _ in range(dimension)])


def noisy(face: list[float], seed: int, relative_noise: float = 0.3) -> list[float]:
    """Another sample of the same face: Gaussian noise of `relative_noise` times the typical
    component size (1/sqrt(d)), renormalised. 0.3 gives a raw cosine of about 0.96."""
    rng = random.Random(seed)
    sigma = relative_noise / math.sqrt(len(face))
    return unit([x + rng.gauss(0.0, sigma) for x in face])


def color_name(color: int) -> str:
    return common_pb2.DecisionColor.Name(color).removeprefix("DECISION_COLOR_")


def confidence_name(confidence: int) -> str:
    return common_pb2.Confidence.Name(confidence).removeprefix("CONFIDENCE_")


# ------------------------------------------------------------------ results
@dataclass
class ConsentedSession:
    session_id: str
    created: verification_pb2.CreateSessionResponse
    opened: verification_pb2.OpenGatewayResponse
    consent: verification_pb2.RecordConsentResponse


@dataclass
class EnrolResult:
    session: ConsentedSession
    response: verification_pb2.EnrolResponse


@dataclass
class VerifyResult:
    session: ConsentedSession
    response: verification_pb2.VerifyResponse


@dataclass
class RefusedVerify:
    session: ConsentedSession
    code: grpc.StatusCode
    details: str


@dataclass
class DemoResult:
    tenant: admin_pb2.Tenant | None = None
    api_key_info: common_pb2.APIKeyInfo | None = None
    whoami: api_keys_pb2.WhoAmIResponse | None = None
    webhook_secret: webhooks_pb2.CreateSecretResponse | None = None
    ed25519_key: webhooks_pb2.CreateEd25519KeyResponse | None = None
    enrolment: EnrolResult | None = None
    probe: VerifyResult | None = None
    completed_session: verification_pb2.GetSessionResponse | None = None
    impostor: VerifyResult | None = None
    delivery: webhooks_pb2.SignDeliveryResponse | None = None
    rotation: admin_pb2.RotateKeyResponse | None = None
    overlap_keys: list[common_pb2.KeyVersion] = field(default_factory=list)
    after_rotation: VerifyResult | None = None
    after_rotation_session: verification_pb2.GetSessionResponse | None = None
    migrated_verify: VerifyResult | None = None
    migrated_session: verification_pb2.GetSessionResponse | None = None
    steps: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the flow
class DemoFlow:
    """One tenant's demo. `officer` holds the officer's channel (Admin), `frontend` the
    front-end certificate's channel (Verification, APIKeys, Webhooks)."""

    def __init__(self, officer: cc.Clients, frontend: cc.Clients, *, seed: int | None = None,
                 out=print, timeout: float = 30.0):
        self.officer = officer
        self.frontend = frontend
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 30)
        self.out = out
        self.timeout = timeout
        self.result = DemoResult()
        self._api_key: str | None = None      # shown once; kept in memory only, never printed
        self._webhook_secret: str | None = None
        # Tenant labels must be unique: the seed may repeat (--seed), the run id does not.
        self.run_id = uuid.uuid4().hex[:8]
        self.label = f"demo-{self.seed}-{self.run_id}"
        self.subject = f"demo-candidate-{self.seed}-{self.run_id}"
        self.face = self.probe = self.impostor = None
        self._step = 0

    # -- helpers
    def say(self, text: str) -> None:
        self.out(text)

    def step(self, title: str) -> None:
        self._step += 1
        self.result.steps.append(title)
        self.say(f"\n[{self._step:2d}] {title}")

    @property
    def tenant_id(self) -> str:
        assert self.result.tenant is not None, "create the tenant first"
        return self.result.tenant.tenant_id

    @property
    def api_key(self) -> str:
        assert self._api_key is not None, "issue the API key first"
        return self._api_key

    @property
    def webhook_secret(self) -> str:
        assert self._webhook_secret is not None, "create the webhook secret first"
        return self._webhook_secret

    def tenant_metadata(self):
        """How the front-end names its caller for tenant-facing calls: the tenant's API key."""
        return cc.bearer(self.api_key)

    # -- officer
    def create_tenant(self, label: str | None = None) -> admin_pb2.Tenant:
        label = label or self.label
        self.step(f"officer ({self.officer.who.name}): Admin.CreateTenant(label={label!r})")
        response = self.officer.admin.CreateTenant(admin_pb2.CreateTenantRequest(label=label),
                                                   timeout=self.timeout)
        self.result.tenant = response.tenant
        p = response.tenant.policy
        self.say(f"     tenant {response.tenant.tenant_id} (disabled={response.tenant.disabled}); "
                 f"thresholds green>={p.green_threshold:.4f} amber>={p.amber_threshold:.4f} "
                 f"({admin_pb2.BiometricTokenFormat.Name(p.thresholds_format)})")
        return response.tenant

    def issue_api_key(self) -> admin_pb2.IssueAPIKeyResponse:
        """Returns the whole answer (with the key, shown once); the result keeps `info` only."""
        self.step(f"officer: Admin.IssueAPIKey(scopes={list(SCOPES)}, ttl 1 h)")
        response = self.officer.admin.IssueAPIKey(
            admin_pb2.IssueAPIKeyRequest(tenant_id=self.tenant_id, scopes=list(SCOPES),
                                         label="python demo", ttl_seconds=3600),
            timeout=self.timeout)
        self._api_key = response.api_key
        self.result.api_key_info = response.info
        self.say(f"     key id {response.info.key_id}, scopes {list(response.info.scopes)}; "
                 "the API key itself was shown once (not printed)")
        return response

    def whoami(self) -> api_keys_pb2.WhoAmIResponse:
        self.step("front-end + API key: APIKeys.WhoAmI")
        response = self.frontend.api_keys.WhoAmI(api_keys_pb2.WhoAmIRequest(),
                                                 metadata=self.tenant_metadata(), timeout=self.timeout)
        self.result.whoami = response
        self.say(f"     key id {response.key_id}, tenant {response.tenant_id}, scopes {list(response.scopes)}")
        return response

    # -- webhooks
    def create_webhook_secret(self) -> webhooks_pb2.CreateSecretResponse:
        self.step("Webhooks.CreateSecret (Standard Webhooks v1, HMAC-SHA256)")
        response = self.frontend.webhooks.CreateSecret(webhooks_pb2.CreateSecretRequest(),
                                                       metadata=self.tenant_metadata(), timeout=self.timeout)
        self._webhook_secret = response.secret
        # The result keeps the version only, so that printing it never shows the secret.
        self.result.webhook_secret = webhooks_pb2.CreateSecretResponse(version=response.version)
        self.say(f"     v1 secret version {response.version}: whsec_… shown once (not printed)")
        return response

    def create_ed25519_key(self) -> webhooks_pb2.CreateEd25519KeyResponse:
        self.step("Webhooks.CreateEd25519Key (v1a; the private key stays in the HSM)")
        response = self.frontend.webhooks.CreateEd25519Key(webhooks_pb2.CreateEd25519KeyRequest(),
                                                           metadata=self.tenant_metadata(), timeout=self.timeout)
        self.result.ed25519_key = response
        self.say(f"     v1a key version {response.version}, public key {response.public_key}")
        return response

    # -- faces
    def make_faces(self) -> tuple[list[float], list[float], list[float]]:
        self.step(f"synthetic {DIMENSION}-d faces (seed {self.seed}): a face, a noisy probe, an impostor")
        self.face = synthetic_face(self.seed)
        self.probe = noisy(self.face, self.seed + 1)
        self.impostor = synthetic_face(self.seed + 2)
        self.say(f"     raw cosine face~probe {cosine(self.face, self.probe):.3f}, "
                 f"face~impostor {cosine(self.face, self.impostor):+.3f} (computed here; Custos never returns scores)")
        return self.face, self.probe, self.impostor

    # -- sessions
    def consented_session(self, why: str) -> ConsentedSession:
        md = self.tenant_metadata()
        v = self.frontend.verification
        created = v.CreateSession(verification_pb2.CreateSessionRequest(
            subject_external_id=self.subject, candidate_name="Ada Demo",
            candidate_email="ada.demo@example.test"), metadata=md, timeout=self.timeout)
        self.say(f"     CreateSession -> session {created.session_id} ({why}); "
                 "gateway link issued (single-use, not printed)")
        opened = v.OpenGateway(verification_pb2.OpenGatewayRequest(gateway_link=created.gateway_link),
                               metadata=md, timeout=self.timeout)
        self.say(f"     OpenGateway -> notice version {opened.notice_version!r}")
        consent = v.RecordConsent(verification_pb2.RecordConsentRequest(
            session_id=created.session_id, notice_version=opened.notice_version),
            metadata=md, timeout=self.timeout)
        self.say(f"     RecordConsent -> consented at {consent.consented_at.ToJsonString()}")
        return ConsentedSession(created.session_id, created, opened, consent)

    def enrol(self, features: list[float], why: str = "enrolment", replacing: bool = False) -> EnrolResult:
        """`replacing`: the subject is enrolled already; replacing its template must be asked
        for explicitly (metadata custos-reenrol: true), and is audited."""
        self.step(f"Verification: {why} in a new consented session")
        session = self.consented_session(why)
        metadata = tuple(self.tenant_metadata()) + ((("custos-reenrol", "true"),) if replacing else ())
        response = self.frontend.verification.Enrol(
            verification_pb2.EnrolRequest(session_id=session.session_id, features=features),
            metadata=metadata, timeout=self.timeout)
        self.say(f"     Enrol -> subject {response.subject_reference[:14]}… under biometric key "
                 f"version {response.key_version}")
        return EnrolResult(session, response)

    def verify(self, features: list[float], why: str) -> VerifyResult:
        self.step(f"Verification: verify {why} in a new consented session")
        session = self.consented_session(why)
        response = self.frontend.verification.Verify(
            verification_pb2.VerifyRequest(session_id=session.session_id, features=features),
            metadata=self.tenant_metadata(), timeout=self.timeout)
        d = response.decision
        self.say(f"     Verify -> {color_name(d.color)} (confidence {confidence_name(d.confidence)})")
        return VerifyResult(session, response)

    def verify_refused(self, features: list[float], why: str) -> RefusedVerify:
        """Verify that is expected to fail: returns the status code instead of raising.
        Raises AssertionError if the call succeeds."""
        self.step(f"Verification: verify {why} in a new consented session")
        session = self.consented_session(why)
        try:
            response = self.frontend.verification.Verify(
                verification_pb2.VerifyRequest(session_id=session.session_id, features=features),
                metadata=self.tenant_metadata(), timeout=self.timeout)
        except grpc.RpcError as error:
            self.say(f"     Verify -> {error.code().name}: {error.details() or '(no message)'}")
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                self.say("     (the protos promise FAILED_PRECONDITION here: a server deviation, see the test)")
            return RefusedVerify(session, error.code(), error.details() or "")
        raise AssertionError(f"Verify succeeded unexpectedly: {color_name(response.decision.color)}")

    def get_session(self, session_id: str) -> verification_pb2.GetSessionResponse:
        self.step("Verification.GetSession of the probe's session")
        response = self.frontend.verification.GetSession(
            verification_pb2.GetSessionRequest(session_id=session_id),
            metadata=self.tenant_metadata(), timeout=self.timeout)
        self.say(f"     status {verification_pb2.SessionStatus.Name(response.status)}, outcome "
                 f"{verification_pb2.SessionOutcome.Name(response.outcome)}, result "
                 f"{color_name(response.result.color)}, key version {response.key_version}")
        return response

    def sign_delivery(self, session_id: str) -> webhooks_pb2.SignDeliveryResponse:
        self.step("Webhooks.SignDelivery(SESSION_COMPLETED) for the probe's session")
        response = self.frontend.webhooks.SignDelivery(webhooks_pb2.SignDeliveryRequest(
            event_type=webhooks_pb2.WEBHOOK_EVENT_TYPE_SESSION_COMPLETED, session_id=session_id),
            metadata=self.tenant_metadata(), timeout=self.timeout)
        schemes = [entry.split(",", 1)[0] for entry in response.signature.split(" ") if entry]
        self.say(f"     webhook-id {response.message_id}, webhook-timestamp {response.timestamp} "
                 f"({int(time.time()) - response.timestamp:+d} s from now), signatures {schemes}")
        self.say(f"     body {response.body.decode('utf-8', 'replace')}")
        return response

    def rotate_biometric_keys(self) -> admin_pb2.RotateKeyResponse:
        self.step("officer: Admin.RotateKey(KEY_PURPOSE_BIO_SEED) — rotates both biometric keys")
        response = self.officer.admin.RotateKey(admin_pb2.RotateKeyRequest(
            tenant_id=self.tenant_id, purpose=common_pb2.KEY_PURPOSE_BIO_SEED), timeout=self.timeout)
        for k in response.activated:
            self.say(f"     {common_pb2.KeyPurpose.Name(k.purpose)} v{k.version} "
                     f"{common_pb2.KeyState.Name(k.state)} (check value {k.check_value})")
        return response

    def list_biometric_keys(self) -> list[common_pb2.KeyVersion]:
        self.step("officer: Admin.ListKeys — the old biometric version stays for the overlap")
        keys = [k for k in self.officer.admin.ListKeys(admin_pb2.AdminListKeysRequest(tenant_id=self.tenant_id),
                                                       timeout=self.timeout).keys
                if k.purpose in (common_pb2.KEY_PURPOSE_BIO_SEED, common_pb2.KEY_PURPOSE_BIO_PRF)]
        for k in sorted(keys, key=lambda k: (k.purpose, k.version)):
            until = f" until {k.retiring_until.ToJsonString()}" if k.HasField("retiring_until") else ""
            self.say(f"     {common_pb2.KeyPurpose.Name(k.purpose)} v{k.version} {common_pb2.KeyState.Name(k.state)}{until}")
        return keys

    # -- everything
    def run(self) -> DemoResult:
        r = self.result
        self.say(f"Custos demo over mutual TLS: officer={self.officer.who.name}, "
                 f"front-end={self.frontend.who.name}")
        self.create_tenant()
        self.issue_api_key()
        r.whoami = self.whoami()
        self.create_webhook_secret()
        self.create_ed25519_key()
        self.make_faces()
        r.enrolment = self.enrol(self.face)
        r.probe = self.verify(self.probe, "the probe (same face, noisy)")
        r.completed_session = self.get_session(r.probe.session.session_id)
        r.impostor = self.verify(self.impostor, "an impostor")
        r.delivery = self.sign_delivery(r.probe.session.session_id)
        r.rotation = self.rotate_biometric_keys()
        r.overlap_keys = self.list_biometric_keys()
        # No re-enrolment: a GREEN match under the old version moves the template to the new one.
        r.after_rotation = self.verify(self.probe, "the probe after the rotation (old enrolment, v1)")
        r.after_rotation_session = self.get_session(r.after_rotation.session.session_id)
        r.migrated_verify = self.verify(self.probe, "the probe again (the template is now under v2)")
        r.migrated_session = self.get_session(r.migrated_verify.session.session_id)
        self.say("\ndone.")
        return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="HOST:PORT of custos serve (default: config.json's rpc host and port)")
    parser.add_argument("--config", help="config.json (default: $CUSTOS_CONFIG or <state>/config.json)")
    parser.add_argument("--seed", type=int, help="seed of the synthetic faces (default: random)")
    args = parser.parse_args(argv)

    config = cc.load_config(args.config)
    address = args.address or config.address
    print(f"connecting to {address} (CA {config.ca})")
    with cc.connect(config, "officer", address) as officer, \
            cc.connect(config, "frontend-demo", address) as frontend:
        try:
            cc.wait_ready(officer, timeout=15)
            DemoFlow(officer, frontend, seed=args.seed).run()
        except grpc.RpcError as error:
            print(f"demo: failed: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except grpc.FutureTimeoutError:
            print(f"demo: failed: no TLS connection to {address} within 15 s", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

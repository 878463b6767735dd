"""A small Python client for Custos's gRPC API (custos.v1) over mutual TLS.

The stubs are generated from proto/ by grpcio-tools into a build folder that is not committed
(scripts/python-client-test and scripts/demo do it; default <state>/python-gen, or
$CUSTOS_PY_GEN). This module only adds what every caller needs:

  * the configuration: <state>/config.json (or $CUSTOS_CONFIG), its `rpc` section (host, port,
    caCertificate, clientCertificate / clientKey = the officer the set-up made);
  * channels with mutual TLS for a named identity from <state>/pki (officer-alice,
    officer-bob, frontend-demo, other-client of an unrelated CA), to one instance or, given
    `host:port,host:port`, round robin over several (reads retried on another instance on
    UNAVAILABLE, writes never sent twice);
  * metadata helpers: `bearer(api_key)` and `tenant(tenant_id)`;
  * `Clients`, the stubs of every service bound to one channel.

Secrets (API keys, webhook secrets) pass through here in memory only; nothing is logged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def state_dir() -> Path:
    return Path(os.environ.get("CUSTOS_STATE_DIR") or REPO / ".custos").resolve()


def gen_dir() -> Path:
    return Path(os.environ.get("CUSTOS_PY_GEN") or state_dir() / "python-gen").resolve()


# The generated modules (custos/v1/*_pb2*.py, health_pb2*.py) live outside the source tree.
_GEN = gen_dir()
if not (_GEN / "custos" / "v1" / "verification_pb2.py").is_file():
    raise ImportError(
        f"generated stubs not found in {_GEN}: run scripts/python-client-test or scripts/demo "
        "(or grpc_tools.protoc -Iproto --python_out=... --grpc_python_out=...)"
    )
if str(_GEN) not in sys.path:
    sys.path.insert(0, str(_GEN))

import grpc  # noqa: E402

from custos.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402,F401
from custos.v1 import api_keys_pb2, api_keys_pb2_grpc  # noqa: E402,F401
from custos.v1 import common_pb2  # noqa: E402,F401
from custos.v1 import verification_pb2, verification_pb2_grpc  # noqa: E402,F401
from custos.v1 import webhooks_pb2, webhooks_pb2_grpc  # noqa: E402,F401
import health_pb2  # noqa: E402,F401
import health_pb2_grpc  # noqa: E402,F401

TENANT_HEADER = "custos-tenant"
# The name the server certificate carries as a DNS SAN (it also has IP 127.0.0.1).
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Config:
    host: str
    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    source: Path

    @property
    def pki(self) -> Path:
        return self.ca.parent

    @property
    def address(self) -> str:
        return join_address(self.host, self.port)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """The `rpc` section of config.json ($CUSTOS_CONFIG, or <state>/config.json)."""
    path = Path(path or os.environ.get("CUSTOS_CONFIG") or state_dir() / "config.json")
    with open(path) as f:
        rpc = json.load(f)["rpc"]
    return Config(
        host=rpc.get("host", "127.0.0.1"),
        port=int(rpc["port"]),
        ca=Path(rpc["caCertificate"]),
        client_cert=Path(rpc["clientCertificate"]),
        client_key=Path(rpc["clientKey"]),
        source=path,
    )


def join_address(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


@dataclass(frozen=True)
class Identity:
    """A client certificate and its key (PEM files)."""

    name: str
    cert: Path
    key: Path


def identity(config: Config, name: str) -> Identity:
    """`officer` (the config's client certificate), or a certificate of <pki>/<name>.pem."""
    if name == "officer":
        return Identity(config.client_cert.stem, config.client_cert, config.client_key)
    return Identity(name, config.pki / f"{name}.pem", config.pki / f"{name}.key")


# Calls that change nothing a second run would change again: on UNAVAILABLE (an instance
# killed or restarting) gRPC sends them again, to another instance. The same list as
# RoundRobinClient.idempotentMethods in Sources/RPC/Client/RoundRobinClient.swift. Enrol,
# Verify and every write are not in it: they may have run on the instance that died, so their
# UNAVAILABLE goes to the caller. (gRPC itself moves a call to another instance only when it
# could not be started on the chosen connection, i.e. it never reached a server.)
IDEMPOTENT_METHODS = (
    ("grpc.health.v1.Health", "Check"),
    ("custos.v1.APIKeys", "WhoAmI"),
    ("custos.v1.APIKeys", "ListKeys"),
    ("custos.v1.Verification", "GetSession"),
    ("custos.v1.Verification", "Ping"),
    ("custos.v1.Webhooks", "PublicKeys"),
    ("custos.v1.Admin", "ListTenants"),
    ("custos.v1.Admin", "ListKeys"),
    ("custos.v1.Admin", "ListAPIKeys"),
    ("custos.v1.Admin", "AuditTail"),
    ("custos.v1.Admin", "AuditVerify"),
    ("custos.v1.Admin", "HSMStatus"),
    ("custos.v1.Admin", "KeyStatus"),
)


def service_config() -> str:
    """Round robin over the resolved addresses that report SERVING on grpc.health.v1 (gRPC's
    client-side health checking: one Watch per address; an instance shutting down or without an
    answering HSM is skipped, as by the Swift HealthCheckedTransport); IDEMPOTENT_METHODS
    retried on UNAVAILABLE (up to 5 attempts, 100 ms to 1 s apart, as the Swift client)."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{
            "name": [{"service": service, "method": method} for service, method in IDEMPOTENT_METHODS],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }],
    })


def target(address: str) -> str:
    """A gRPC target for `host:port`, or for several separated by commas (IP literals of one
    family: `ipv4:h1:p1,h2:p2`, which gRPC resolves to one subchannel each)."""
    entries = [entry.strip() for entry in address.split(",")]
    if len(entries) == 1:
        return entries[0]
    families = set()
    for entry in entries:
        host = entry.rsplit(":", 1)[0].strip("[]")
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ValueError(f"several addresses must be IP literals: {entry!r}") from None
    if len(families) != 1:
        raise ValueError(f"several addresses must be all IPv4 or all IPv6: {address!r}")
    return ("ipv4:" if families == {4} else "ipv6:") + ",".join(entries)


def channel(config: Config, who: Identity, address: str | None = None,
            server_name: str | None = None) -> grpc.Channel:
    """A mutual-TLS channel to `address` (default: the configured host and port; or several
    instances, `host:port,host:port`, round robin) that trusts only the Custos CA and presents
    `who`'s certificate. With several addresses every instance's certificate is checked
    against one name: `server_name`, by default the first address's host (give the name all
    instances' certificates share, e.g. a service DNS name, when their addresses differ)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config.ca.read_bytes(),
        private_key=who.key.read_bytes(),
        certificate_chain=who.cert.read_bytes(),
    )
    options = [
        # Each identity gets its own connection: never share a subchannel between two
        # client certificates (gRPC pools subchannels by target and credentials otherwise).
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.service_config", service_config()),
        ("grpc.enable_retries", 1),
        # A lost instance is tried again soon (gRPC's default starts at 1 s and grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    resolved = target(address or config.address)
    if resolved.startswith(("ipv4:", "ipv6:")):
        # gRPC would check the certificates against the whole address list.
        first = resolved.split(":", 1)[1].split(",")[0].rsplit(":", 1)[0].strip("[]")
        options.append(("grpc.ssl_target_name_override", server_name or first))
    return grpc.secure_channel(resolved, credentials, options=options)


def bearer(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


def tenant(tenant_id: str) -> tuple[tuple[str, str], ...]:
    return ((TENANT_HEADER, tenant_id),)


class Clients:
    """The stubs of every Custos service over one channel."""

    def __init__(self, ch: grpc.Channel, who: Identity):
        self.channel = ch
        self.who = who
        self.admin = admin_pb2_grpc.AdminStub(ch)
        self.verification = verification_pb2_grpc.VerificationStub(ch)
        self.api_keys = api_keys_pb2_grpc.APIKeysStub(ch)
        self.webhooks = webhooks_pb2_grpc.WebhooksStub(ch)
        self.health = health_pb2_grpc.HealthStub(ch)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Clients":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(config: Config, name: str, address: str | None = None) -> Clients:
    who = identity(config, name)
    return Clients(channel(config, who, address), who)


def wait_ready(clients: Clients, timeout: float = 30.0) -> None:
    """Blocks until the channel is connected (TLS handshake done) or raises
    grpc.FutureTimeoutError."""
    grpc.channel_ready_future(clients.channel).result(timeout=timeout)


def code_name(error: grpc.RpcError) -> str:
    return error.code().name

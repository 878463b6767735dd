#!/usr/bin/env python3
"""The Python client with two Custos instances: round robin over both, one killed with SIGKILL.

Starts `BIN serve` twice on CONFIG (any free ports), makes one channel over both addresses
(custos_client.channel with `host:port,host:port`), and checks that
  * the target and service config are what the channel needs (pure checks), and its health
    checks skip an instance that reports NOT_SERVING (two stand-in loopback servers);
  * reads (ListTenants, idempotent) answer before and after one instance is killed;
  * writes (CreateTenant) sent while it dies are applied at most once each, and every
    acknowledged one is there afterwards.
Plain Python (no pytest): `ok: …` / `FAIL: …` lines, last line `test_failover: N passed, M
failed`, --results FILE gets `N M` for scripts/python-client-test. Only the processes this
script started are signalled, by pid.

Usage: test_failover.py --bin CUSTOS_BINARY --config config.json [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc

import custos_client as cc
from custos_client import admin_pb2

passed = 0
failed = 0


def check(name: str, condition: bool, detail: str = "") -> None:
    global passed, failed
    if condition:
        passed += 1
        print(f"ok: {name}")
    else:
        failed += 1
        print(f"FAIL: {name}{': ' + detail if detail else ''}")


def start(binary: str, config: str, work: Path, name: str) -> tuple[subprocess.Popen, str]:
    address_file = work / f"{name}.address"
    log = open(work / f"{name}.log", "wb")
    process = subprocess.Popen(
        [binary, "serve", "--config", config, "--port", "0", "--metrics-port", "0", "--address-file", str(address_file)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    for _ in range(600):
        if address_file.exists() and ":" in address_file.read_text():
            return process, address_file.read_text().strip()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"custos serve ({name}) did not listen; see {work / (name + '.log')}")


def pure_checks() -> None:
    check("one address stays as it is", cc.target("127.0.0.1:7443") == "127.0.0.1:7443")
    check("several IPv4 addresses become an ipv4: target",
          cc.target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2")
    try:
        cc.target("localhost:1,127.0.0.1:2")
        check("a DNS name among several is refused", False)
    except ValueError:
        check("a DNS name among several is refused", True)
    config = json.loads(cc.service_config())
    names = {(n["service"], n["method"]) for n in config["methodConfig"][0]["name"]}
    check("round robin is the load-balancing policy", config["loadBalancingConfig"] == [{"round_robin": {}}])
    check("reads are retried, Enrol/Verify/CreateTenant are not",
          ("custos.v1.Admin", "ListTenants") in names
          and not names & {("custos.v1.Verification", "Enrol"), ("custos.v1.Verification", "Verify"),
                           ("custos.v1.Admin", "CreateTenant")})


class _Health(cc.health_pb2_grpc.HealthServicer):
    """A stand-in instance: Watch reports `status`; Check answers with `answer`, which tells
    the caller which instance it reached."""

    def __init__(self, status: int, answer: int):
        self.status = status
        self.answer = answer

    def Check(self, request, context):
        return cc.health_pb2.HealthCheckResponse(status=self.answer)

    def Watch(self, request, context):
        yield cc.health_pb2.HealthCheckResponse(status=self.status)
        while context.is_active():
            time.sleep(0.05)


def health_checks() -> None:
    """Two plaintext loopback servers, one reporting NOT_SERVING: every call through a channel
    with the client's service config reaches the serving one."""
    from concurrent import futures

    response = cc.health_pb2.HealthCheckResponse
    servers, addresses = [], []
    for status, answer in [(response.SERVING, response.SERVING), (response.NOT_SERVING, response.SERVICE_UNKNOWN)]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        cc.health_pb2_grpc.add_HealthServicer_to_server(_Health(status, answer), server)
        addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        servers.append(server)
    try:
        channel = grpc.insecure_channel(
            cc.target(",".join(addresses)),
            options=[("grpc.service_config", cc.service_config()), ("grpc.enable_retries", 1)],
        )
        stub = cc.health_pb2_grpc.HealthStub(channel)
        answers = [stub.Check(cc.health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True).status for _ in range(20)]
        check("health checks: no call reaches the instance that reports NOT_SERVING",
              answers == [response.SERVING] * 20, f"{answers}")
        channel.close()
    finally:
        for server in servers:
            server.stop(None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--results", default=None)
    args = parser.parse_args()
    config = cc.load_config(args.config)
    config_path = str(config.source)

    pure_checks()
    health_checks()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="custos-py-failover-") as work:
        try:
            first, first_address = start(args.bin, config_path, Path(work), "a")
            processes.append(first)
            second, second_address = start(args.bin, config_path, Path(work), "b")
            processes.append(second)
            clients = cc.connect(config, "officer", f"{first_address},{second_address}")
            cc.wait_ready(clients)
            admin = clients.admin
            for _ in range(6):
                admin.ListTenants(admin_pb2.ListTenantsRequest(), timeout=30)
            check("reads answer through both instances", True)

            run = uuid.uuid4().hex[:8]
            acknowledged: list[str] = []
            lock = threading.Lock()

            def writer(number: int) -> None:
                for index in range(10):
                    label = f"py-{run}-{number}-{index}"
                    try:
                        admin.CreateTenant(admin_pb2.CreateTenantRequest(label=label), timeout=30)
                        with lock:
                            acknowledged.append(label)
                    except grpc.RpcError:
                        pass

            threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            while True:
                with lock:
                    if len(acknowledged) >= 6:
                        break
                time.sleep(0.005)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            for thread in threads:
                thread.join()

            failures = []
            for _ in range(20):
                try:
                    admin.ListTenants(admin_pb2.ListTenantsRequest(), timeout=30)
                except grpc.RpcError as error:
                    failures.append(cc.code_name(error))
            check("reads answer after one instance was killed with SIGKILL", not failures, f"{failures}")

            labels = [t.label for t in admin.ListTenants(admin_pb2.ListTenantsRequest(), timeout=30).tenants
                      if t.label.startswith(f"py-{run}-")]
            twice = sorted({label for label in labels if labels.count(label) > 1})
            check("no write was applied twice", not twice, f"{twice}")
            missing = sorted(set(acknowledged) - set(labels))
            check("every acknowledged write is there", not missing, f"{missing}")
            clients.close()
        except Exception as error:  # noqa: BLE001 — reported as a failed check
            check("the failover run completed", False, f"{type(error).__name__}: {error}")
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()

    print(f"test_failover: {passed} passed, {failed} failed")
    if args.results:
        Path(args.results).write_text(f"{passed} {failed}\n")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""``pantheon up`` with and without broker access control (D26): the same consortium runs,
finalizes transactions, and in the secure mode every process is its own principal."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import psycopg
import pytest

from harness.stack_fixtures import private_settings, removed_afterwards
from infra import kafka_acl, procs
from infra.cli import main
from infra.stack import Stack
from ledger.genesis import Genesis
from ledger.keys import KeyPair
from ledger.results import ResultCode
from projections.projector import database_name
from runtime.kafka_config import PASSWORD_FILE_ENV, USER_ENV, use_credentials
from streams.devices import Device, DeviceProducer, register_devices
from streams.sdk import LedgerClient

pytestmark = pytest.mark.integration


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


@pytest.mark.parametrize("auth", ["", "scram"], ids=["plaintext", "scram"])
def test_a_consortium_finalizes_with_and_without_broker_acls(
    auth: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PANTHEON_INSTITUTIONS", "alpha,beta")
    for name in (USER_ENV, PASSWORD_FILE_ENV, "PANTHEON_KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    settings = private_settings().with_changes(kafka_auth=auth)
    stack = Stack(settings)
    with removed_afterwards(settings.state_dir):
        try:
            stack.up()  # registers each batcher's key: a transaction final on chain
            assert all(s.healthy for s in stack.status()), stack.status()
            assert stack.kafka.secure is bool(auth)

            home = settings.state_dir / "consortium"
            expected: dict[Path, str] = {}
            for inst in ("alpha", "beta"):
                expected[home / "validators" / f"{inst}-0" / "pid"] = f"operator.{inst}"
                for role in ("projectors", "gateways", "batchers", "auditors"):
                    expected[home / role / inst / "pid"] = f"institution.{inst}"
            secrets = (
                [f.read_text().strip() for f in kafka_acl.auth_dir(settings).iterdir()]
                if auth
                else []
            )
            for pid_file, principal in expected.items():
                pid = procs.read_pid(pid_file)
                assert pid is not None, pid_file
                env = _environ(pid)
                assert env.get(USER_ENV) == (principal if auth else None), pid_file
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                assert not any(s in cmdline for s in secrets), pid_file
                assert not any(s in v for s in secrets for v in env.values()), pid_file

            # the CLI writes alpha's first administrator to pantheon.iam.alpha (as alpha's
            # institution principal); alpha's projector reads it back
            for name, value in {
                "PANTHEON_STATE_DIR": settings.state_dir,
                "PANTHEON_KAFKA_PORT": settings.kafka_port,
                "PANTHEON_PG_PORT": settings.pg_port,
                "PANTHEON_PROM_PORT": settings.prom_port,
                "PANTHEON_GATEWAY_PORT": settings.gateway_port,
                "PANTHEON_ADMIN_PASSWORD": "correct-horse-battery-staple",
            }.items():
                monkeypatch.setenv(name, str(value))
            assert main(["iam", "create-admin", "--institution", "alpha", "--login", "root"]) == 0

            # a client of alpha (its own principal) submits; the quorum finalizes it
            doc = json.loads((home / "keys" / "alpha.json").read_text())
            key = KeyPair.from_seed(bytes.fromhex(doc["governance"]["seed"]))
            with psycopg.connect(stack.postgres.dsn(database_name("alpha"))) as conn:
                row = conn.execute(
                    "SELECT next_nonce FROM chain.keys WHERE key_id = %s", (key.key_id,)
                ).fetchone()
            assert row is not None
            principal = kafka_acl.institution_principal("alpha")
            with (
                use_credentials(kafka_acl.credentials(settings, principal)),
                LedgerClient(
                    settings.bootstrap_servers,
                    key,
                    doc["chain_id"],
                    prefix=settings.topic_prefix,
                    next_nonce=int(row[0]),
                    genesis=Genesis.decode((home / "genesis.avro").read_bytes()),
                ) as client,
            ):
                receipt = client.submit_and_wait(
                    "AnchorData",
                    {"data_id": f"acl-{auth or 'plain'}", "sha256": bytes(32), "metadata": "{}"},
                    timeout=60,
                )
                sensor = Device(key=KeyPair.from_seed(os.urandom(32)))
                register_devices(client, [sensor.key], institution="alpha")
            assert receipt.code == ResultCode.OK
            procs.wait_until(
                lambda: all(v.final_height >= receipt.height for v in stack.validators()),
                timeout=30,
                what="every validator to see the block final",
            )

            # a device backend (the iot principal) sends readings; alpha's batcher (its
            # institution principal, in its consumer group) anchors them on chain
            def batches() -> int:
                with psycopg.connect(stack.postgres.dsn(database_name("alpha"))) as conn:
                    found = conn.execute("SELECT count(*) FROM chain.l2_batches").fetchone()
                return int(found[0]) if found else 0

            with (
                use_credentials(kafka_acl.credentials(settings, kafka_acl.IOT)),
                DeviceProducer(settings.bootstrap_servers, prefix=settings.topic_prefix) as out,
            ):

                def anchored() -> bool:  # the batcher learns of new devices every 5 s
                    out.send(sensor.record(b"21.5", measured_at_ms=int(time.time() * 1000)))
                    out.flush(10)
                    return batches() > 0

                procs.wait_until(anchored, timeout=60, interval=1, what="a device batch")

            # no process was refused anything it needs
            for log in sorted(home.glob("*/*/*.log")):
                assert "AUTHORIZATION_FAILED" not in log.read_text(errors="replace"), log
        finally:
            stack.down()

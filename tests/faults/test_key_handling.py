"""Security review of key handling, as tests: every secret file is 0600 (and loaders refuse
looser ones), and no secret (key seeds, the IAM master key, the database password) appears in
the log files of a short consortium run with load, a crash and a restart."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth.crypto import CryptoError, create_master_key_file, load_master_key
from harness.consortium import Consortium, Load, new_key
from infra.keystore import KeystoreError, load_key, write_secret
from infra.postgres_server import Postgres

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def consortium(bootstrap: str, unique: str, tmp_path: Path) -> Iterator[Consortium]:
    c = Consortium(bootstrap, tmp_path / "c", 4, prefix=f"keys{unique}.", block_interval_ms=200)
    try:
        yield c
    finally:
        c.close()


def secret_forms(secret: bytes) -> list[bytes]:
    """The ways a secret could leak into a log: hex (both cases), base64, base64url."""
    return [
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_secret_files_are_0600_and_loosened_ones_are_refused(
    consortium: Consortium, postgres: Postgres, tmp_path: Path
) -> None:
    c = consortium
    for inst in c.institutions:
        assert mode(c.keystore_path(inst)) == 0o600, inst
    assert mode(postgres.password_file) == 0o600
    master = tmp_path / "iam" / "master.key"
    create_master_key_file(master)
    assert mode(master) == 0o600 and mode(master.parent) == 0o700
    single = tmp_path / "service.json"
    key = new_key()
    write_secret(single, {**key.describe(), "seed": key.seed.hex()})
    assert mode(single) == 0o600 and load_key(single).key_id == key.key_id
    for path in (single, master):
        path.chmod(0o640)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_key(single)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_master_key(master)
    with pytest.raises(KeystoreError, match="refusing to overwrite"):  # never replaced
        write_secret(single, {"seed": "00"})


def test_no_secret_appears_in_the_logs_of_a_run(
    consortium: Consortium, postgres: Postgres, tmp_path: Path
) -> None:
    c = consortium
    c.start_all()
    c.wait_ready(c.institutions)
    load = Load(c, c.gov_key("inst-2"), rate=30, tag="keys").start()
    try:
        c.wait_final(2, timeout=60)
        c.kill("inst-3")  # a crash and a restart log more (replay, recovery)
        c.restart("inst-3")
        c.wait_final(c.max_final(c.institutions) + 2, timeout=60)
    finally:
        load.stop()
    c.close()
    secrets: dict[str, bytes] = {}
    for inst in c.institutions:
        secrets[f"{inst} governance seed"] = c.gov_key(inst).seed
        secrets[f"{inst} operator seed"] = c.operator_key(inst).seed
    secrets["postgres password"] = postgres.password().encode()
    logs = sorted((c.workdir / "logs").glob("*.log"))
    assert len(logs) == 2 * len(c.institutions)
    total = sum(p.stat().st_size for p in logs)
    assert total > 0
    leaks = []
    for path in logs:
        text = path.read_bytes()
        for name, secret in secrets.items():
            forms = [secret] if name == "postgres password" else secret_forms(secret)
            if any(form in text for form in forms):
                leaks.append(f"{name} in {path.name}")
    assert not leaks, leaks
    print(f"\nkeys: {len(secrets)} secrets, {len(logs)} log files, {total} bytes: no leak")

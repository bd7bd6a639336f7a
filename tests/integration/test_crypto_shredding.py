"""Crypto-shredding for real (D25): after ``forgetUser`` no file on the machine decrypts the user.

Real Kafka and PostgreSQL of a private stack started for this module (its state directory
holds only this module's data: PostgreSQL's data directory with ``pg_wal``, Kafka's log
directories, key files and backups), the real IAM service with its master
key and KEK files under ``<state>/consortium/iam/<inst>/`` and the real GraphQL app. A user
with a distinctive email and name changes their password and profile (several wrapped copies
and WAL records), a key backup is taken by the documented procedure (``pg_dump`` of the
gateway-owned tables, kept in the state directory, unencrypted: the worst case), then an
administrator calls ``forgetUser``. An attacker who reads every file of the state directory
(decompressing Kafka's LZ4 batches) and holds every key file present -- the master key and
the KEK files -- tries every 61-byte string that starts like a wrapped key (and every hex
one, as in a dump) against the user's data key id, then every sealed profile with whatever
key came out. Before the forget this scan decrypts the email and name (the control: the
test can fail); after it, nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import ConnectionPool
from starlette.testclient import TestClient

from gateway.app import GatewayConfig, create_app
from gateway.auth.crypto import (
    CryptoError,
    DataKey,
    Kek,
    MasterKey,
    _wrap_aad,
    create_master_key_file,
    load_master_key,
    open_profile,
    unwrap_data_key,
)
from gateway.auth.passwords import FAST
from gateway.context import Services
from gateway.iam import data_keys
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.kek import KekStore
from gateway.iam.service import IamService
from harness.stack_fixtures import private_settings, removed_afterwards
from infra import cli, cli_iam, keystore
from infra.errors import PortTakenError
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres, find_bindir
from projections.iam import IamProjection
from projections.projector import database_name
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.iam_keys import iam_key, pinned_signer, pinned_signers

pytestmark = pytest.mark.integration

EMAIL = "zanzibar.quixote-7731@shred.example"
NAME = "Zanzibar Quixote-Ferrante"
WRAPPED_LEN = 1 + 12 + 32 + 16
BACKUP_TABLES = ("iam_data_keys", "iam_signing_keys", "iam_setup", "iam_kek")
FORGET = """mutation($u: String!) { forgetUser(userId: $u) { userId error { code message } } }"""
LOGIN = """mutation($l: String!, $p: String!) { login(username: $l, password: $p) {
  token error { code } } }"""


# -- the attacker --------------------------------------------------------------------------
def lz4_block(src: bytes) -> bytes:
    """Decompress one LZ4 block (the format inside Kafka's LZ4 frames)."""
    out = bytearray()
    i = 0
    while i < len(src):
        token = src[i]
        i += 1
        n = token >> 4
        if n == 15:
            while True:
                b = src[i]
                i += 1
                n += b
                if b != 255:
                    break
        out += src[i : i + n]
        i += n
        if i >= len(src):
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise ValueError("bad lz4 offset")
        m = token & 15
        if m == 15:
            while True:
                b = src[i]
                i += 1
                m += b
                if b != 255:
                    break
        m += 4
        start = len(out) - offset
        for k in range(m):  # may overlap its own output
            out.append(out[start + k])
    return bytes(out)


def lz4_frames(data: bytes) -> Iterator[bytes]:
    """Every LZ4 frame found anywhere in ``data``, decompressed (Kafka's compressed batches)."""
    at = data.find(b"\x04\x22\x4d\x18")
    while at >= 0:
        try:
            flg = data[at + 4]
            i = at + 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
            out = bytearray()
            while True:
                size = int.from_bytes(data[i : i + 4], "little")
                i += 4
                if size == 0:
                    break
                block = data[i : i + (size & 0x7FFFFFFF)]
                i += size & 0x7FFFFFFF
                out += block if size & 0x80000000 else lz4_block(block)
                if flg & 0x10:
                    i += 4
            yield bytes(out)
        except (ValueError, IndexError):
            pass
        at = data.find(b"\x04\x22\x4d\x18", at + 4)


@dataclass
class Findings:
    files: int = 0
    bytes_read: int = 0
    candidates: int = 0
    data_keys: dict[bytes, str] = field(default_factory=dict)  # key bytes -> where
    plaintext: list[str] = field(default_factory=list)  # where EMAIL or NAME was read


PROFILE = re.compile(rb'\{"f": \{[^{}]{1,4000}\}, "k": "dk-[0-9a-f]{16}"\}')
HEX_WRAPPED = re.compile(rb"\\x(01[0-9a-f]{%d})" % (2 * (WRAPPED_LEN - 1)))


def _keks(files: list[Path], master: MasterKey, inst: str) -> list[Kek]:
    """Every KEK file present, recognised by content wherever it is."""
    keks = []
    for path in files:
        try:
            if path.stat().st_size >= 4096 or b'"kek_id"' not in path.read_bytes():
                continue
            kek = KekStore(path.parent, master, inst)._read(path)
        except (OSError, CryptoError):
            continue
        if kek is not None:
            keks.append(kek)
    return keks


def scan(root: Path, master: MasterKey, inst: str, user_id: str, key_id: str) -> Findings:
    """Everything an attacker holding every file under ``root`` decrypts of ``user_id``."""
    found = Findings()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    wrappers: list[MasterKey | Kek] = [master, *_keks(files, master, inst)]
    trials = [(AESGCM(w.key), _wrap_aad(w, inst, user_id, key_id), w) for w in wrappers]
    profiles: list[tuple[Path, bytes]] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError:
            continue  # a socket or a file that vanished
        found.files += 1
        found.bytes_read += len(raw)
        for data in (raw, *lz4_frames(raw)):
            candidates = [
                data[m.start() : m.start() + WRAPPED_LEN] for m in re.finditer(b"\x01", data)
            ]
            candidates += [bytes.fromhex(m[1].decode()) for m in HEX_WRAPPED.finditer(data)]
            for blob in candidates:
                if len(blob) != WRAPPED_LEN:
                    continue
                found.candidates += 1
                for aes, aad, wrapper in trials:
                    try:
                        aes.decrypt(blob[1:13], blob[13:], aad)
                    except InvalidTag:
                        continue
                    dk = unwrap_data_key(wrapper, inst, user_id, key_id, blob)
                    found.data_keys.setdefault(dk.key, str(path))
            if EMAIL.encode() in data or NAME.encode() in data:
                found.plaintext.append(f"{path} (in clear)")
            profiles.extend((path, m[0]) for m in PROFILE.finditer(data))
    for path, profile in profiles:
        for key in found.data_keys:
            try:
                fields = open_profile(DataKey(key_id, key), inst, user_id, profile)
            except CryptoError:
                continue
            if EMAIL in fields.values() or NAME in fields.values():
                found.plaintext.append(str(path))
    return found


# -- the stack -----------------------------------------------------------------------------
@dataclass
class Stack:
    kafka: KafkaCluster
    postgres: Postgres
    bootstrap: str
    state: Path


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A private Kafka and PostgreSQL: the scan reads this module's files only, so its cost
    does not grow with the rest of the test session."""
    for attempt in range(3):
        settings = private_settings()
        kafka, postgres = KafkaCluster(settings), Postgres(settings)
        try:
            kafka.start()
            postgres.start()
        except PortTakenError:
            kafka.stop()
            postgres.stop()
            shutil.rmtree(settings.state_dir, ignore_errors=True)
            if attempt == 2:
                raise
            continue
        try:
            with removed_afterwards(settings.state_dir):
                yield Stack(kafka, postgres, settings.bootstrap_servers, settings.state_dir)
        finally:
            kafka.stop()
            postgres.stop()
        return


@dataclass
class Shred:
    service: IamService
    client: TestClient
    dsn: str
    institution: str
    state: Path
    master: MasterKey


@pytest.fixture
def shred(stack: Stack, unique: str) -> Iterator[Shred]:
    state, bootstrap, postgres = stack.state, stack.bootstrap, stack.postgres
    institution = f"shred{unique}"
    prefix = f"shred{unique}."
    iam_dir = state / "consortium" / "iam" / institution
    create_master_key_file(iam_dir / "master.key")
    master = load_master_key(iam_dir / "master.key")
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[institution])
    postgres.ensure_database(f"shred_{unique}")
    dsn = postgres.dsn(f"shred_{unique}")
    service = IamService(
        bootstrap=bootstrap,
        dsn=dsn,
        institution=institution,
        signer=pinned_signer(institution),
        signers=pinned_signers(institution),
        master_key=master,
        prefix=prefix,
        password_params=FAST,
        kek_dir=iam_dir,
    )
    runner = ProjectionRunner(
        dsn,
        bootstrap,
        IamProjection(institution, prefix=prefix, signers=pinned_signers(institution)),
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
    )
    thread.start()
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn, min_size=1, max_size=4, open=True, kwargs={"autocommit": True}
    )
    app = create_app(
        GatewayConfig(institution=institution),
        Services(institution=institution, pool=pool, accounts=service),
        service.verifier(),
    )
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Shred(service, client, dsn, institution, state, master)
    finally:
        stop.set()
        thread.join(30)
        pool.close()
        service.close()


def gql(client: TestClient, token: str | None, query: str, **variables: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)
    assert "Traceback" not in r.text
    return r.status_code, r.json()


def token(s: Shred, login: str, password: str) -> str:
    status, body = gql(s.client, None, LOGIN, l=login, p=password)
    assert status == 200 and body["data"]["login"]["error"] is None, body
    return str(body["data"]["login"]["token"])


def backup_keys(s: Shred) -> Path:
    """docs/deployment.md section 7: ``pg_dump`` of the gateway-owned IAM tables."""
    out = s.state / "backups" / f"iam-{time.strftime('%F')}-{time.monotonic_ns()}.sql"
    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [str(find_bindir() / "pg_dump"), "-d", s.dsn, "-f", str(out)]
    for table in BACKUP_TABLES:
        argv += ["-t", table]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return out


def postgres_data(s: Shred) -> Path:
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        row = conn.execute("SHOW data_directory").fetchone()
    assert row is not None and Path(row[0]).is_relative_to(s.state)
    return Path(row[0])


def checkpoint(s: Shred) -> None:
    with psycopg.connect(s.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def test_after_forget_user_no_file_decrypts_the_user(shred: Shred) -> None:
    s, svc = shred, shred.service
    began = time.monotonic()
    credential = ensure_setup_credential(s.dsn, s.institution, s.master)
    assert credential is not None
    root = svc.bootstrap_admin(credential, "root", "root-password-1", {"email": "r@x.org"})
    grace = svc.create_user(root, "grace", "grace-password-1", {"email": EMAIL, "name": NAME})
    bob = svc.create_user(root, "bob", "bob-password-11", {"email": "bob@x.org", "name": "Bob"})
    svc.change_password(grace, grace, "grace-password-2", "grace-password-1")
    svc.update_profile(grace, grace, {"email": EMAIL, "name": NAME, "phone": "+1 555 0100"})
    svc.change_password(root, grace, "grace-password-3")
    svc.update_profile(root, grace, {"email": EMAIL, "name": NAME})
    dk = svc.data_key(grace)
    assert dk is not None
    with psycopg.connect(s.dsn) as conn:
        row = conn.execute(
            "SELECT wrapped FROM iam_data_keys WHERE user_id = %s", (grace,)
        ).fetchone()
    assert row is not None
    old_wrapped = bytes(row[0])
    dump = backup_keys(s)
    assert dk.key_id.encode() in dump.read_bytes()
    checkpoint(s)

    control = scan(s.state, s.master, s.institution, grace, dk.key_id)
    assert dk.key in control.data_keys, "control: the scan must find the wrapped key"
    assert control.plaintext, "control: the scan must decrypt the user's profile"
    assert not any("in clear" in where for where in control.plaintext)  # encrypted at rest

    admin = token(s, "root", "root-password-1")
    user = token(s, "grace", "grace-password-3")
    # Typed refusals: not an admin, unknown user, the institution administrator.
    status, body = gql(s.client, user, FORGET, u=grace)
    assert status == 403 and body["errors"][0]["extensions"]["required"] == "admin"
    status, body = gql(s.client, admin, FORGET, u="u-nobody")
    assert body["data"]["forgetUser"]["error"]["code"] == "UNKNOWN_USER"
    status, body = gql(s.client, admin, FORGET, u=root)
    assert body["data"]["forgetUser"]["error"]["code"] == "NOT_AUTHORIZED"
    forget_began = time.monotonic()
    status, body = gql(s.client, admin, FORGET, u=grace)
    forget_s = time.monotonic() - forget_began
    assert status == 200 and body["data"]["forgetUser"] == {"userId": grace, "error": None}
    checkpoint(s)

    after = scan(s.state, s.master, s.institution, grace, dk.key_id)
    assert after.data_keys == {}, after.data_keys
    assert after.plaintext == []
    assert svc.data_key(grace) is None and svc.profile(root, grace) is None
    assert svc.profile(root, bob) == {"email": "bob@x.org", "name": "Bob"}  # others unharmed
    haystack = [dk.key, dk.key.hex().encode()]
    for path in sorted(p for p in s.state.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not any(needle in data for needle in haystack), f"raw data key in {path}"
    # The old copies are all still on disk (what a deleted row leaves), and open with nothing.
    assert old_wrapped.hex().encode() in dump.read_bytes()
    pg_data = postgres_data(s)
    assert any(old_wrapped in p.read_bytes() for p in pg_data.rglob("*") if p.is_file())
    print(
        f"\nscanned {after.files} files, {after.bytes_read / 1e6:.0f} MB, "
        f"{after.candidates} candidate blobs; control found {len(control.data_keys)} key(s) "
        f"and {len(control.plaintext)} profile copies; forgetUser took {forget_s * 1000:.0f} ms;"
        f" total {time.monotonic() - began:.1f} s"
    )


def test_forget_user_cli(
    stack: Stack,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``pantheon iam forget-user`` against a local-stack layout whose servers are the
    session's: confirmation, typed errors without tracebacks, the forget, shred-forgotten."""
    bootstrap, kafka, postgres = stack.bootstrap, stack.kafka, stack.postgres
    state, institution, prefix = tmp_path / "state", f"cli-{unique}", f"cli{unique}."
    keystore.create_genesis(state / "consortium", "pantheon-local", [institution])
    (state / "postgres").mkdir(parents=True)
    (state / "postgres" / "password").write_text(postgres.password() + "\n")
    iam_dir = state / "consortium" / "iam" / institution
    master = create_master_key_file(iam_dir / "master.key")
    # The CLI signs with the institution's IAM key file (D21); this layout has no chain, so
    # the key is the pinned test key and its height is 0 (the projection pins it too).
    keystore.write_secret(iam_dir / "iam-key.json", {"seed": iam_key(institution).seed.hex()})
    monkeypatch.setattr(cli_iam, "chain_key_height", lambda *_: lambda: 0)
    monkeypatch.setattr(cli_iam, "trusted_signers", pinned_signers)
    for name, value in (
        ("PANTHEON_STATE_DIR", str(state)),
        ("PANTHEON_KAFKA_PORT", str(kafka.settings.kafka_port)),
        ("PANTHEON_PG_PORT", str(postgres.settings.pg_port)),
        ("PANTHEON_TOPIC_PREFIX", prefix),
    ):
        monkeypatch.setenv(name, value)
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[institution])
    postgres.ensure_database(database_name(institution))
    dsn = postgres.dsn(database_name(institution))
    svc = IamService(
        bootstrap=bootstrap,
        dsn=dsn,
        institution=institution,
        signer=pinned_signer(institution),
        signers=pinned_signers(institution),
        master_key=master,
        prefix=prefix,
        password_params=FAST,
        kek_dir=iam_dir,
    )
    runner = ProjectionRunner(
        dsn,
        bootstrap,
        IamProjection(institution, prefix=prefix, signers=pinned_signers(institution)),
    )
    stop = threading.Event()
    thread = threading.Thread(
        target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05}, daemon=True
    )
    thread.start()  # after the service migrated the tables (their creation is not concurrent)
    try:
        credential = ensure_setup_credential(dsn, institution, master)
        assert credential is not None
        root = svc.bootstrap_admin(credential, "root", "root-password-1")
        user = svc.create_user(root, "grace", "grace-password-1", {"email": EMAIL})

        def run(*argv: str) -> tuple[int, str, str]:
            code = cli.main(["iam", *argv])
            out, err = capsys.readouterr()
            assert "Traceback" not in out + err
            return code, out, err

        forget = ("forget-user", "--institution", institution, "--user", user)
        code, _, err = run(*forget)  # no terminal, no --yes: refused, nothing changed
        assert code == 2 and "--yes" in err and svc.data_key(user) is not None
        code, _, err = run("forget-user", "--institution", "nowhere", "--user", user, "--yes")
        assert code == 2 and "unknown institution" in err
        code, _, err = run("forget-user", "--institution", institution, "--user", "u-x", "--yes")
        assert code == 2 and "unknown_user" in err
        code, _, err = run("forget-user", "--institution", institution, "--user", root, "--yes")
        assert code == 2 and "not_authorized" in err and svc.data_key(root) is not None

        code, out, _ = run(*forget, "--yes")
        assert code == 0 and "forgotten" in out
        assert svc.data_key(user) is None and svc.profile(root, user) is None
        assert svc.profile(root, root) == {}

        # A restored copy brings the key back (as a machine image would): shred-forgotten.
        # The restored gateway tables predate the forget's tombstone too.
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(data_keys.KeyForgotten):
                data_keys.create_data_key(
                    conn, KekStore(iam_dir, master, institution), institution, user
                )
            conn.execute("DELETE FROM iam_forgotten_keys WHERE user_id = %s", (user,))
            data_keys.create_data_key(
                conn, KekStore(iam_dir, master, institution), institution, user
            )
        assert svc.data_key(user) is not None
        code, out, _ = run("shred-forgotten", "--institution", institution)
        assert code == 0 and user in out and svc.data_key(user) is None
        code, out, _ = run("shred-forgotten", "--institution", institution)
        assert code == 0 and out.startswith("0 ")
    finally:
        stop.set()
        thread.join(30)
        svc.close()

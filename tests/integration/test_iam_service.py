"""User management end to end against the real broker and PostgreSQL.

Each test gets its own institution (topic) and database; the IAM projection runs in a
thread with the shared runner, and the service waits for it (read-your-writes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from gateway.auth.crypto import MasterKey, open_profile, open_text
from gateway.auth.passwords import FAST, ScryptParams
from gateway.auth.throttle import LoginThrottle, ThrottlePolicy
from gateway.auth.tokens import (
    KeyRing,
    RevokedToken,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    UnknownKid,
    raw_public,
)
from gateway.iam import data_keys, store
from gateway.iam.bootstrap import create_admin, ensure_setup_credential
from gateway.iam.errors import (
    AlreadyBootstrapped,
    BadSetupCredential,
    LoginFailed,
    LoginThrottled,
    NotApplied,
    NotAuthorized,
    UserExists,
)
from gateway.iam.service import IamService
from gateway.iam.signing import IamSigner
from gateway.iam.state import IamState, evolve
from infra.postgres_server import Postgres
from ledger.iam_events import IamGate, KeyHistory, Opened, sign_event
from ledger.keys import KeyPair
from projections import iam as iam_projection
from projections.iam import PROJECTION_TABLES, IamProjection
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config, consumer_config, producer_config
from runtime.topics import ensure_topics
from schemas.codec import encode
from tests.iam_keys import iam_key, pinned_signer, pinned_signers

pytestmark = pytest.mark.integration

MASTER = MasterKey(bytes(range(32)))
EMAIL = "ada.lovelace@example.org"
NAME = "Ada Lovelace"


class RunningProjection:
    """The IAM projection in a background thread."""

    def __init__(self, dsn: str, bootstrap: str, institution: str, prefix: str) -> None:
        self.runner = ProjectionRunner(
            dsn,
            bootstrap,
            IamProjection(institution, prefix=prefix, signers=pinned_signers(institution)),
        )
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.runner.run,
            args=(self.stop_event,),
            kwargs={"idle_timeout": 0.05},
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)


@dataclass
class Iam:
    service: IamService
    dsn: str
    bootstrap: str
    institution: str
    prefix: str
    projection: RunningProjection
    kek_dir: Path

    @property
    def topic(self) -> str:
        return self.service.topic


@pytest.fixture
def iam(bootstrap: str, postgres: Postgres, unique: str, tmp_path: Path) -> Iterator[Iam]:
    institution = f"inst{unique}"
    prefix = f"iam{unique}."
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[institution])
    postgres.ensure_database(f"iam_{unique}")
    dsn = postgres.dsn(f"iam_{unique}")
    service = IamService(
        bootstrap=bootstrap,
        dsn=dsn,
        institution=institution,
        master_key=MASTER,
        prefix=prefix,
        token_ttl_s=60,
        password_params=FAST,
        throttle=LoginThrottle(ThrottlePolicy(free_failures=3, base_delay_s=30.0)),
        kek_dir=tmp_path / "iam",
        signer=pinned_signer(institution),
        signers=pinned_signers(institution),
    )
    ctx = Iam(
        service,
        dsn,
        bootstrap,
        institution,
        prefix,
        RunningProjection(dsn, bootstrap, institution, prefix),
        tmp_path / "iam",
    )
    try:
        yield ctx
    finally:
        ctx.projection.stop()
        service.close()


def _boot(iam: Iam) -> str:
    credential = ensure_setup_credential(iam.dsn, iam.institution, MASTER)
    assert credential is not None and credential.startswith("pantheon-setup-")
    return iam.service.bootstrap_admin(credential, "root", "root-password", {"email": "r@x.org"})


def test_hierarchy_end_to_end(iam: Iam) -> None:
    svc = iam.service
    credential = ensure_setup_credential(iam.dsn, iam.institution, MASTER)
    assert credential is not None
    with pytest.raises(BadSetupCredential):
        svc.bootstrap_admin("pantheon-setup-guess", "root", "root-password")
    root = svc.bootstrap_admin(credential, "root", "root-password", {"email": "r@x.org"})
    with pytest.raises(AlreadyBootstrapped):
        svc.bootstrap_admin(credential, "root2", "root-password")
    assert ensure_setup_credential(iam.dsn, iam.institution, MASTER) is None

    svc.create_group(root, "operators", "block operators")
    svc.grant(root, "group:operators", "chain:write")
    svc.grant(root, "group:operators", "data:read")
    alice = svc.create_user(root, "alice", "alice-password", {"email": EMAIL, "display_name": NAME})
    svc.add_member(root, alice, "operators")
    svc.grant(root, alice, "chain:read")

    token = svc.login("alice", "alice-password", "10.0.0.1")
    claims = svc.verifier().verify(token.value)
    assert claims.sub == alice and claims.inst == iam.institution
    assert claims.groups == ("operators",)
    assert claims.perms == {"chain:read", "chain:write", "data:read"}
    assert claims.exp - claims.iat == 60 and claims.kid == svc.jwks()["keys"][0]["kid"]

    # Any service can verify with the published JWKS alone.
    remote = TokenVerifier.from_jwks(
        svc.jwks(), issuer=svc.issuer_name, audience=svc.audience, clock=time.time
    )
    assert remote.verify(token.value).sub == alice

    # Alice is not an admin: she administers nothing until the owner makes her one.
    with pytest.raises(NotAuthorized):
        svc.create_user(alice, "bob", "bob-password")
    svc.grant(root, alice, "admin")
    bob = svc.create_user(alice, "bob", "bob-password")
    assert "admin" in svc.verifier().verify(svc.login("alice", "alice-password", "s").value).perms
    assert svc.verifier().verify(svc.login("bob", "bob-password", "s").value).perms == frozenset()
    assert svc.profile(alice, alice) == {"email": EMAIL, "display_name": NAME}
    assert svc.profile(bob, bob) == {}
    with pytest.raises(NotAuthorized):
        svc.profile(bob, alice)

    # A service account logs in with its API credential.
    account, api_credential = svc.create_service_account(root, "ingest")
    svc.grant(root, account, "chain:write")
    service_claims = svc.verifier().verify(svc.login_service(api_credential, "10.0.0.5").value)
    assert service_claims.sub == account and service_claims.perms == {"chain:write"}
    with pytest.raises(LoginFailed):
        svc.login_service(f"{account}.wrong-secret", "10.0.0.5")

    # Password change: own (needs the old one) or by an admin.
    with pytest.raises(NotAuthorized):
        svc.change_password(bob, bob, "new-bob-password", "not-the-old-one")
    svc.change_password(bob, bob, "new-bob-password", "bob-password")
    with pytest.raises(LoginFailed):
        svc.login("bob", "bob-password", "s")
    assert svc.login("bob", "new-bob-password", "s").claims.sub == bob


def test_wrong_passwords_are_throttled(iam: Iam) -> None:
    root = _boot(iam)
    iam.service.create_user(root, "carol", "carol-password")
    for _ in range(4):
        with pytest.raises(LoginFailed):
            iam.service.login("carol", "wrong-password", "10.0.0.7")
    with pytest.raises(LoginThrottled) as err:
        iam.service.login("carol", "carol-password", "10.0.0.7")
    assert err.value.retry_after > 0
    with pytest.raises(LoginFailed):
        iam.service.login("nobody", "whatever-pw", "10.0.0.8")


def test_a_password_guesser_cannot_lock_the_owner_out(iam: Iam) -> None:
    svc = iam.service
    _boot(iam)
    owner, attacker, nat = "10.0.0.1", "203.0.113.9", "192.0.2.1"
    at_home = svc.login("root", "root-password", owner)  # the owner's client, known since
    phone = svc.login("root", "root-password", nat)  # a phone behind a shared address
    assert at_home.device_token and phone.device_token
    stop = threading.Event()
    outcomes: list[str] = []

    def guess() -> None:  # wrong passwords for the admin, from two addresses, non-stop
        while not stop.is_set():
            for source in (attacker, nat):
                try:
                    svc.login("root", f"guess-{len(outcomes)}", source)
                    outcomes.append("accepted")
                except LoginThrottled:
                    outcomes.append("throttled")
                except LoginFailed:
                    outcomes.append("failed")
            time.sleep(0.01)

    guesser = threading.Thread(target=guess, daemon=True)
    guesser.start()
    try:
        deadline = time.monotonic() + 3.0
        while outcomes.count("throttled") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(3):  # the owner logs in with the right password, while it goes on
            assert "admin" in svc.login("root", "root-password", owner).claims.perms
            # behind the guesser's own address, the device token of the earlier login
            token = svc.login("root", "root-password", nat, phone.device_token)
            assert token.claims.sub == at_home.claims.sub and token.device_token
            time.sleep(0.2)
    finally:
        stop.set()
        guesser.join(10)
    # the guesser was slowed: 3 free failures per address, then refused unchecked for 30 s
    assert "accepted" not in outcomes
    assert outcomes.count("failed") <= 6 < outcomes.count("throttled"), outcomes[:20]
    with pytest.raises(LoginThrottled) as err:
        svc.login("root", "root-password", attacker)  # even the right password, from there
    assert err.value.retry_after > 10
    with pytest.raises(LoginThrottled):  # a client never seen to log in waits too
        svc.login("root", "root-password", "198.51.100.7")
    with pytest.raises(LoginThrottled):  # the shared address without the device token
        svc.login("root", "root-password", nat)


def test_disabled_user_cannot_log_in_and_tokens_stop_working(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    dave = svc.create_user(root, "dave", "dave-password")
    verifier = svc.verifier()
    token = svc.login("dave", "dave-password", "s")
    assert verifier.verify(token.value).sub == dave

    svc.disable_user(root, dave, "left the company")
    with pytest.raises(RevokedToken) as err:
        verifier.verify(token.value)
    assert err.value.reason == "revoked"
    with pytest.raises(LoginFailed):
        svc.login("dave", "dave-password", "s")


def test_revoking_one_token_or_all_tokens_of_a_user(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    erin = svc.create_user(root, "erin", "erin-password")
    verifier = svc.verifier()
    first = svc.login("erin", "erin-password", "s")
    second = svc.login("erin", "erin-password", "s")
    svc.revoke_token(erin, first.claims)
    with pytest.raises(RevokedToken):
        verifier.verify(first.value)
    assert verifier.verify(second.value).sub == erin

    svc.revoke_all_tokens(root, erin)
    with pytest.raises(RevokedToken):
        verifier.verify(second.value)
    third = svc.login("erin", "erin-password", "s")  # a new login works again
    assert verifier.verify(third.value).sub == erin


def test_key_rotation_keeps_old_tokens_valid(iam: Iam) -> None:
    svc = iam.service
    _boot(iam)
    old = svc.login("root", "root-password", "s")
    new_kid = svc.rotate_signing_key()
    new = svc.login("root", "root-password", "s")
    assert new.claims.kid == new_kid != old.claims.kid
    assert {k["kid"] for k in svc.jwks()["keys"]} == {old.claims.kid, new_kid}
    verifier = svc.verifier()
    assert verifier.verify(old.value).sub == verifier.verify(new.value).sub


@pytest.mark.parametrize("seal", ["junk", "another key's seal"])
def test_a_signing_key_row_written_into_postgres_mints_no_token(
    iam: Iam, seal: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL is not trusted: a retired key is believed only from its private half
    sealed under the master key with its own kid, never from the ``public_key`` column."""
    svc = iam.service
    _boot(iam)
    genuine = svc.login("root", "root-password", "s")
    forger = SigningKey.generate(int(time.time()) - 10)
    with psycopg.connect(iam.dsn) as conn:
        sealed = conn.execute("SELECT sealed_private FROM iam_signing_keys").fetchone()
        assert sealed is not None
        conn.execute(
            "INSERT INTO iam_signing_keys (kid, public_key, sealed_private, created_at_s, "
            "retired_at_s) VALUES (%s, %s, %s, %s, %s)",
            (
                forger.kid,
                raw_public(forger.public),
                b"\x01" + bytes(60) if seal == "junk" else bytes(sealed[0]),
                int(time.time()) - 10,
                int(time.time()) - 5,
            ),
        )
    issuer = TokenIssuer(
        KeyRing(forger), issuer=svc.issuer_name, audience=svc.audience, ttl_s=60, clock=time.time
    )
    forged = issuer.issue(
        sub=genuine.claims.sub, inst=iam.institution, groups=[], perms=genuine.claims.perms
    )
    time.sleep(1.1)  # an unknown kid reloads the ring at most once a second
    caplog.set_level(logging.WARNING, logger="pantheon.iam")
    verifier = svc.verifier()
    with pytest.raises(UnknownKid):
        verifier.verify(forged.value)
    assert forger.kid not in {k["kid"] for k in svc.jwks()["keys"]}
    assert verifier.verify(genuine.value).sub == genuine.claims.sub
    refused = [r for r in caplog.records if r.getMessage().startswith("IAM row refused")]
    assert refused and {(getattr(r, "table", ""), getattr(r, "key", "")) for r in refused} == {
        ("iam_signing_keys", forger.kid)
    }


def _topic_values(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(consumer_config(bootstrap, f"scan-{topic}"))
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(values) < high and time.monotonic() < deadline:
            for msg in consumer.consume(high - len(values), 0.2):
                assert msg.error() is None
                values.append(msg.value() or b"")
        assert len(values) == high
        return values
    finally:
        consumer.close()


def _db_values(dsn: str) -> list[Any]:
    out: list[Any] = []
    with psycopg.connect(dsn) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}").fetchall():
                out.extend(row)
    return out


def _contains(value: Any, needle: str) -> bool:
    if isinstance(value, bytes | memoryview):
        return needle.encode() in bytes(value)
    return needle in str(value)


def test_crypto_shredding_forgets_a_user_and_everything_else_still_projects(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    svc.create_group(root, "analysts")
    ada = svc.create_user(root, "ada", "ada-password", {"email": EMAIL, "display_name": NAME})
    svc.add_member(root, ada, "analysts")
    svc.update_profile(ada, ada, {"email": EMAIL, "display_name": NAME, "phone": "+44 1234"})
    # Encrypted at rest: no plaintext on the topic or in the database, even before forgetting.
    for value in [*_topic_values(iam.bootstrap, iam.topic), *_db_values(iam.dsn)]:
        assert not _contains(value, EMAIL) and not _contains(value, NAME)
    with psycopg.connect(iam.dsn) as conn:
        sealed = conn.execute(
            "SELECT encrypted_profile FROM iam_users WHERE user_id = %s", (ada,)
        ).fetchone()
    dk = svc.data_key(ada)
    assert sealed is not None and dk is not None
    assert open_profile(dk, iam.institution, ada, bytes(sealed[0]))["email"] == EMAIL

    svc.forget_user(root, ada)

    assert svc.profile(root, ada) is None
    assert svc.data_key(ada) is None
    with psycopg.connect(iam.dsn) as conn:
        row = conn.execute(
            "SELECT encrypted_profile, password_hash, forgotten, disabled, login "
            "FROM iam_users WHERE user_id = %s",
            (ada,),
        ).fetchone()
    assert row == (None, None, True, True, "ada")
    with pytest.raises(LoginFailed):
        svc.login("ada", "ada-password", "s")
    # The old key cannot be recovered from anywhere: every sealed profile on the topic now
    # belongs to a key that no longer exists.
    with psycopg.connect(iam.dsn) as conn:
        keys = {r[0] for r in conn.execute("SELECT key_id FROM iam_data_keys").fetchall()}
    assert dk.key_id not in keys
    for value in [*_topic_values(iam.bootstrap, iam.topic), *_db_values(iam.dsn)]:
        assert not _contains(value, EMAIL) and not _contains(value, NAME)
        assert not _contains(value, dk.key.hex())

    # Everything else still projects.
    svc.create_group(root, "auditors")
    grace = svc.create_user(root, "grace", "grace-password", {"email": "grace@example.org"})
    svc.add_member(root, grace, "analysts")
    assert svc.login("grace", "grace-password", "s").claims.groups == ("analysts",)
    assert svc.profile(root, grace) == {"email": "grace@example.org"}


def _snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in PROJECTION_TABLES
        }


def test_rebuilding_the_projection_from_the_topic_gives_the_same_tables(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    svc.create_group(root, "ops")
    svc.grant(root, "group:ops", "chain:write")
    users = [
        svc.create_user(root, f"user{i}", "user-password", {"email": f"{i}@x.org"})
        for i in range(3)
    ]
    svc.add_member(root, users[0], "ops")
    svc.add_member(root, users[1], "ops")
    svc.remove_member(root, users[1], "ops")
    svc.grant(root, users[2], "data:read")
    svc.revoke(root, users[2], "data:read")
    svc.disable_user(root, users[1], "test")
    svc.forget_user(root, users[2])
    svc.create_service_account(root, "ingest")
    token = svc.login("user0", "user-password", "s")
    svc.revoke_token(root, token.claims)
    svc.revoke_all_tokens(root, users[0])
    before = _snapshot(iam.dsn)
    assert len(before["iam_users"]) == 5 and before["iam_memberships"]

    iam.projection.stop()
    with psycopg.connect(iam.dsn, autocommit=True) as conn:
        iam_projection.reset(conn, iam.institution)
    assert all(not rows for rows in _snapshot(iam.dsn).values())
    iam.projection = RunningProjection(iam.dsn, iam.bootstrap, iam.institution, iam.prefix)
    deadline = time.monotonic() + 30
    while _snapshot(iam.dsn) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _snapshot(iam.dsn) == before


def test_create_admin_from_the_cli_path(iam: Iam) -> None:
    user_id = create_admin(
        bootstrap=iam.bootstrap,
        dsn=iam.dsn,
        institution=iam.institution,
        master_key=MASTER,
        login="chief",
        password="chief-password",
        prefix=iam.prefix,
        password_params=FAST,
        kek_dir=iam.kek_dir,
        signer=pinned_signer(iam.institution),
        signers=pinned_signers(iam.institution),
    )
    assert iam.service.login("chief", "chief-password", "s").claims.sub == user_id
    with pytest.raises(AlreadyBootstrapped):
        create_admin(
            bootstrap=iam.bootstrap,
            dsn=iam.dsn,
            institution=iam.institution,
            master_key=MASTER,
            login="chief2",
            password="chief-password",
            prefix=iam.prefix,
            signer=pinned_signer(iam.institution),
            signers=pinned_signers(iam.institution),
        )


def test_projection_matches_the_reference_fold_and_skips_bad_records(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    svc.create_group(root, "ops")
    alice = svc.create_user(root, "alice", "alice-password")
    svc.add_member(root, alice, "ops")
    svc.grant(root, "group:ops", "chain:read")
    with pytest.raises(UserExists):
        svc.create_user(root, "alice", "other-password")
    # A refused command leaves no orphan data key behind.
    with psycopg.connect(iam.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM iam_data_keys").fetchone() == (2,)

    # A racing gateway's duplicate registration (signed by the institution's key), a record
    # of another institution and garbage: the projection ignores all three and keeps going.
    duplicate = {
        "event_id": "dup",
        "institution_id": iam.institution,
        "at_ms": 1,
        "user_id": "u-racer",
        "login": "alice",
        "password_hash": "x",
        "encrypted_profile": b"",
        "actor": root,
        "data_key_id": "",
    }
    foreign = {**duplicate, "institution_id": "someone-else", "user_id": "u-f", "login": "f1"}
    producer = Producer(producer_config(iam.bootstrap))
    key = iam_key(iam.institution)
    for value in (
        sign_event(key, iam.institution, 0, encode("UserRegistered", duplicate)),
        sign_event(key, iam.institution, 0, encode("UserRegistered", foreign)),
        b"\xc3\x01garbage!",
    ):
        producer.produce(iam.topic, key=b"x", value=value)
    producer.flush(10)
    svc.create_group(root, "after")  # waits until everything before it is projected

    state = IamState(institution=iam.institution)
    trusted = KeyHistory.from_rows(
        [(key.key_id, 0, iam.institution, "SERVICE", True, key.public_key)]
    )
    gate = IamGate(iam.institution, trusted.at)
    for value in _topic_values(iam.bootstrap, iam.topic):
        opened = gate.admit(value)
        if isinstance(opened, Opened):
            state = evolve(state, opened.schema, opened.record)
    with psycopg.connect(iam.dsn) as conn:
        projected = store.load_state(conn, iam.institution)
    assert projected == state
    assert "u-racer" not in projected.principals and "after" in projected.groups


def test_login_upgrades_a_hash_made_with_weaker_parameters(iam: Iam) -> None:
    root = _boot(iam)  # hashed with FAST (log2 n = 4)
    stronger = IamService(
        bootstrap=iam.bootstrap,
        dsn=iam.dsn,
        institution=iam.institution,
        master_key=MASTER,
        prefix=iam.prefix,
        password_params=ScryptParams(log_n=6),
        kek_dir=iam.kek_dir,
        signer=pinned_signer(iam.institution),
        signers=pinned_signers(iam.institution),
    )
    try:
        assert stronger.login("root", "root-password", "s").claims.sub == root
        dk = stronger.data_key(root)
        with psycopg.connect(iam.dsn) as conn:
            row = conn.execute(
                "SELECT password_hash FROM iam_users WHERE user_id = %s", (root,)
            ).fetchone()
        assert dk is not None and row is not None
        assert open_text(dk, iam.institution, root, "password_hash", row[0]).startswith("scrypt$6$")
        assert stronger.login("root", "root-password", "s").claims.sub == root
    finally:
        stronger.close()


def test_an_event_the_projection_refused_is_not_reported_as_done(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    bob = svc.create_user(root, "bob", "bob-password")
    token = svc.login("bob", "bob-password", "s")
    # Signed by a key the institution never registered: projected (the position passes it)
    # but refused by the readers' rule, so nothing changed and the caller must not hear "ok".
    svc.signer = IamSigner(KeyPair.from_seed(bytes(32)), lambda: 0)
    with pytest.raises(NotApplied, match="refused"):
        svc.disable_user(root, bob, "left")
    with pytest.raises(NotApplied, match="refused"):
        svc.revoke_all_tokens(root, bob)
    svc.signer = pinned_signer(iam.institution)
    assert svc.verifier().verify(token.value).sub == bob  # indeed still valid
    svc.disable_user(root, bob, "left")
    with pytest.raises(RevokedToken):
        svc.verifier().verify(token.value)


def test_forgetting_closes_the_window_and_no_data_key_is_created_after(
    iam: Iam, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = iam.service
    root = _boot(iam)
    carl = svc.create_user(root, "carl", "carl-password")
    token = svc.login("carl", "carl-password", "s")
    verifier = svc.verifier()
    rotate = data_keys.rotate_kek
    seen: list[bool] = []

    def rotate_kek(*args: Any, **kwargs: Any) -> Any:
        try:  # when the key is destroyed, the user's tokens must already be dead
            verifier.verify(token.value)
            seen.append(False)
        except RevokedToken:
            seen.append(True)
        return rotate(*args, **kwargs)

    monkeypatch.setattr(data_keys, "rotate_kek", rotate_kek)
    svc.forget_user(root, carl)
    assert seen == [True]
    monkeypatch.setattr(data_keys, "rotate_kek", rotate)

    # The window between the rotation and UserForgotten being projected: the tombstone the
    # rotation committed refuses a fresh data key even though iam_users does not say so yet.
    erin = svc.create_user(root, "erin", "erin-password")
    with psycopg.connect(iam.dsn, autocommit=True) as conn:
        data_keys.rotate_kek(conn, svc.kek_store, forget=(erin,))
        assert conn.execute(
            "SELECT forgotten FROM iam_users WHERE user_id = %s", (erin,)
        ).fetchone() == (False,)
        for user in (carl, erin):
            with pytest.raises(data_keys.KeyForgotten):
                data_keys.create_data_key(conn, svc.kek_store, iam.institution, user)
        assert conn.execute(
            "SELECT count(*) FROM iam_data_keys WHERE user_id = ANY(%s)", ([carl, erin],)
        ).fetchone() == (0,)

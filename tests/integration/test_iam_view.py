"""Rows written into the IAM tables give nothing: the gateway believes the signed topic.

Whoever can write the institution's PostgreSQL (docs/security.md: not a trusted party)
writes the rows an attacker wants in ``iam_grants``, ``iam_memberships``, ``iam_users``,
``iam_revoked_tokens`` and ``iam_service_accounts``, against the real broker and database.
The gateway's decisions (a token's access, a login, a command) read the IAM view folded from
the signed events (:mod:`gateway.iam.view`), so none of those rows changes them. Each test
fails on the code before the view, which read those tables.
"""

from __future__ import annotations

import uuid
from unittest.mock import patch

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg_pool import ConnectionPool

from gateway.auth.tokens import RevokedToken
from gateway.iam.errors import LoginFailed, NotAuthorized
from gateway.iam.sessions import AccessUnknown
from gateway.iam.view import IamView, IamViewUnavailable
from ledger.iam_events import sign_event
from runtime.kafka_config import producer_config
from schemas.codec import encode
from tests.iam_keys import iam_key, pinned_signers
from tests.integration.test_iam_service import Iam, _boot, iam
from tests.integration.test_iam_trust import wait_for

pytestmark = pytest.mark.integration
__all__ = ["iam"]  # the fixture, imported so pytest finds it here


def _write(iam: Iam, *statements: tuple[str, tuple[object, ...]]) -> None:
    """The database's owner writes rows (nothing on the IAM topic)."""
    with psycopg.connect(iam.dsn, autocommit=True) as conn:
        for sql, params in statements:
            assert conn.execute(sql, params).rowcount == 1, sql


def test_a_grant_or_membership_row_gives_no_permission(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    svc.create_group(root, "admins-by-row", "")
    mallory = svc.create_user(root, "mallory", "mallory-password")
    token = svc.login("mallory", "mallory-password", "s")
    grant = "INSERT INTO iam_grants VALUES (%s, %s, %s, 1)"
    _write(
        iam,
        (grant, (mallory, "admin", root)),
        (grant, ("group:admins-by-row", "chain:write", root)),
        ("INSERT INTO iam_memberships VALUES (%s, 'admins-by-row', %s, 1)", (mallory, root)),
    )
    claims = svc.verifier().verify(token.value)
    assert claims.perms == frozenset() and claims.groups == ()
    again = svc.login("mallory", "mallory-password", "s")  # a new token is no wider
    assert again.claims.perms == frozenset() and again.claims.groups == ()
    with pytest.raises(NotAuthorized):  # nor does the gateway sign what only an admin may
        svc.create_user(mallory, "sybil", "sybil-password")
    with pytest.raises(NotAuthorized):
        svc.grant(mallory, mallory, "chain:write")


def test_rows_that_undo_a_disable_or_a_revocation_change_nothing(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    dave = svc.create_user(root, "dave", "dave-password")
    erin = svc.create_user(root, "erin", "erin-password")
    revoked = svc.login("erin", "erin-password", "s")
    svc.revoke_token(erin, revoked.claims)
    before_all = svc.login("erin", "erin-password", "s")
    svc.revoke_all_tokens(root, erin)
    svc.disable_user(root, dave, "left")
    _write(
        iam,
        ("UPDATE iam_users SET disabled = false WHERE user_id = %s", (dave,)),
        ("UPDATE iam_users SET tokens_not_before_ms = 0 WHERE user_id = %s", (erin,)),
        ("DELETE FROM iam_revoked_tokens WHERE jti = %s", (revoked.claims.jti,)),
    )
    with pytest.raises(LoginFailed):
        svc.login("dave", "dave-password", "s")
    verifier = svc.verifier()
    for token in (revoked, before_all):
        with pytest.raises(RevokedToken):
            verifier.verify(token.value)


def test_an_older_password_or_a_service_row_written_back_logs_nobody_in(iam: Iam) -> None:
    svc = iam.service
    root = _boot(iam)
    frank = svc.create_user(root, "frank", "first-password")
    with psycopg.connect(iam.dsn) as conn:
        old = conn.execute(
            "SELECT password_hash FROM iam_users WHERE user_id = %s", (frank,)
        ).fetchone()
    assert old is not None
    svc.change_password(frank, frank, "second-password", "first-password")
    account, credential = svc.create_service_account(root, "meter")
    svc.disable_user(root, account, "retired")
    _write(
        iam,
        ("UPDATE iam_users SET password_hash = %s WHERE user_id = %s", (old[0], frank)),
        ("UPDATE iam_users SET disabled = false WHERE user_id = %s", (account,)),
    )
    with pytest.raises(LoginFailed):  # the hash the gateway sealed earlier, written back
        svc.login("frank", "first-password", "s")
    assert svc.login("frank", "second-password", "s").claims.sub == frank
    with pytest.raises(LoginFailed):
        svc.login_service(credential, "s")


def test_a_view_that_cannot_read_its_topic_refuses_rather_than_guesses(iam: Iam) -> None:
    """No topic (a broker not ready, a wrong prefix): decisions wait, then fail typed, and a
    token's access is unknown (a 401 with its reason), never the empty state's answer."""
    with ConnectionPool(iam.dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        view = IamView(
            bootstrap=iam.bootstrap,
            topic=f"no-such-topic-{uuid.uuid4().hex}",
            institution=iam.institution,
            pool=pool,
            signers=pinned_signers(iam.institution),
        )
        try:
            with pytest.raises(IamViewUnavailable, match="not read within"):
                view.wait_ready(0.5)
        finally:
            view.close()
    svc = iam.service
    _boot(iam)
    token = svc.login("root", "root-password", "s")
    unread = IamViewUnavailable("the IAM topic was not read within 15 s")
    with patch.object(svc.view, "wait_ready", side_effect=unread), pytest.raises(AccessUnknown):
        svc.verifier().verify(token.value)


def test_a_forgotten_flag_written_into_postgres_shreds_no_key(iam: Iam) -> None:
    """``shred-forgotten`` (run after restoring a dump) destroys the keys of the users the
    signed topic forgot, not of those ``iam_users.forgotten`` names: a flag written there
    would otherwise lock the owner out for good and shred a live user's data."""
    svc = iam.service
    root = _boot(iam)
    alice = svc.create_user(root, "alice", "alice-password", {"email": "a@x.org"})
    with psycopg.connect(iam.dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE iam_users SET forgotten = true WHERE user_id IN (%s, %s)", (root, alice)
        )
    assert svc.shred_forgotten() == []
    assert svc.login("root", "root-password", "s").claims.sub == root
    assert svc.profile(root, alice) == {"email": "a@x.org"}


def test_a_fresh_view_stopped_behind_a_held_event_is_not_ready(iam: Iam) -> None:
    """A message the chain cannot decide yet (here a key height the pinned chain never
    reaches) holds every event behind it. A view started meanwhile would miss what follows
    (a revoke-all): it is not ready, so decisions fail closed, while the running view, ready
    before, goes on serving what it decided (as the projection does)."""
    svc = iam.service
    root = _boot(iam)
    event = encode(
        "GroupCreated",
        {
            "event_id": f"held-{uuid.uuid4().hex[:6]}",
            "institution_id": iam.institution,
            "at_ms": 1,
            "group": "held",
            "description": "",
            "actor": root,
        },
    )
    producer = Producer(producer_config(iam.bootstrap))
    producer.produce(
        iam.topic, value=sign_event(iam_key(iam.institution), iam.institution, 9, event)
    )
    assert producer.flush(10) == 0
    wait_for(lambda: svc.view.waiting_for == 9, "the running view holds the event")
    assert svc.login("root", "root-password", "s").claims.sub == root
    with ConnectionPool(iam.dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        fresh = IamView(
            bootstrap=iam.bootstrap,
            topic=iam.topic,
            institution=iam.institution,
            pool=pool,
            signers=pinned_signers(iam.institution),
        )
        try:
            wait_for(lambda: fresh.waiting_for == 9, "the fresh view reached the event")
            with pytest.raises(IamViewUnavailable):
                fresh.wait_ready(0.5)
        finally:
            fresh.close()


def test_an_older_profile_written_back_is_not_what_the_gateway_shows(iam: Iam) -> None:
    """A user's personal fields are opened from the latest signed event's seal, so an older
    seal written back into ``iam_users`` (it opens: same user, same data key) shows nothing
    old."""
    svc = iam.service
    root = _boot(iam)
    grace = svc.create_user(root, "grace", "grace-password", {"email": "old@x.org"})
    with psycopg.connect(iam.dsn) as conn:
        old = conn.execute(
            "SELECT encrypted_profile FROM iam_users WHERE user_id = %s", (grace,)
        ).fetchone()
    assert old is not None
    svc.update_profile(grace, grace, {"email": "new@x.org"})
    _write(iam, ("UPDATE iam_users SET encrypted_profile = %s WHERE user_id = %s", (old[0], grace)))
    assert svc.profile(root, grace) == {"email": "new@x.org"}

"""The gateway's IAM view believes the chain tables only with a certificate (D75), against
the real broker and PostgreSQL.

The world of :mod:`tests.integration.test_iam_trust` (a :class:`SimChain` certifying real
blocks, the chain projector writing the chain tables, ``inst-1``'s IAM key registered on
chain). Whoever can write PostgreSQL and produce to the IAM topic:

* inserts a ``chain.key_activity`` row making a key of their own an active SERVICE key of
  ``inst-1`` and produces an ``admin`` grant signed by it: a view with
  :class:`~projections.iam_signers.ChainSigners` (the policy before D75) applies it, a view
  with :class:`~projections.iam_certified.CertifiedSigners` refuses it, while both accept
  every genuine event (the bootstrap, a user, a grant, a group made afterwards);
* moves a certified header stamp: the view's clock keeps the certified stamp, and a policy
  reading the tampered table from scratch stops below the block instead of believing it
  (ChainSigners takes the moved stamp);
* flips a revoked SERVICE key's deactivation row to ``active``: ChainSigners believes the
  key again, CertifiedSigners takes the key's history from certified entries only;
* inserts a deactivation of the genuine IAM key (a rollback on a fresh reader before D75):
  CertifiedSigners ignores it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from gateway.iam.view import IamView
from harness.projections_support import CHAIN_ID
from ledger.iam_events import sign_event
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from projections.iam_certified import CertifiedSigners
from projections.iam_signers import ChainSigners
from tests.integration.test_iam_trust import INST, World, grant_event, produce, wait_for, world
from tests.integration.test_tampered_stamps import stored_stamp

pytestmark = pytest.mark.integration
__all__ = ["world"]  # the module fixture of test_iam_trust, imported so pytest finds it here
HOUR_MS = 3_600_000


@contextmanager
def two_views(w: World, offset: int) -> Iterator[tuple[IamView, IamView]]:
    """A view with the policy before D75 (ChainSigners) and one with CertifiedSigners, each
    once it decided ``offset``."""
    certified = CertifiedSigners(w.sim.genesis, institution=INST)
    with ConnectionPool(w.running.dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        views = [
            IamView(
                bootstrap=w.sim.bootstrap, topic=w.topic, institution=INST, pool=pool, signers=p
            )
            for p in (ChainSigners(), certified)
        ]
        try:
            for view in views:
                view.wait_ready()
                assert view.wait_for(offset, 30), "the view decided the event"
            yield views[0], views[1]
        finally:
            for view in views:
                view.close()


def test_a_key_activity_row_written_into_postgres_signs_nothing(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    caplog.set_level(logging.WARNING, logger="pantheon.projections.iam")
    attacker = KeyPair.from_seed(os.urandom(32))
    height = w.running.projection.height
    with psycopg.connect(w.running.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO chain.key_activity (key_id, height, institution_id, role, active, "
            "public_key) VALUES (%s, %s, %s, 'SERVICE', true, %s)",
            (attacker.key_id, height, INST, attacker.public_key),
        )
    event_id = f"escalate-{uuid.uuid4().hex[:6]}"
    [offset] = produce(w, [sign_event(attacker, INST, height, grant_event(w, event_id))])
    with two_views(w, offset) as (old, new):
        assert old.applied([event_id]) == {event_id}  # the policy before D75 believed it
        assert "admin" in old.access_of(w.alice).perms
        assert new.applied([event_id]) == set()
        assert "admin" not in new.access_of(w.alice).perms
        refusals = [r for r in caplog.records if r.getMessage().startswith("chain row refused")]
        assert [getattr(r, "key_id", None) for r in refusals] == [attacker.key_id.hex()]
        # genuine events are accepted alike, before and after the attack
        assert "chain:read" in new.access_of(w.alice).perms
        group = f"after-{uuid.uuid4().hex[:6]}"
        w.service.create_group(w.root, group)
        wait_for(lambda: group in new.state.groups, "the certified view took the group")
        wait_for(lambda: group in old.state.groups, "the other view took the group")


def test_a_moved_header_stamp_does_not_move_the_certified_clock(world: World) -> None:
    w = world
    height = w.running.projection.height
    genuine = stored_stamp(w, height)
    certified = CertifiedSigners(w.sim.genesis, institution=INST)
    with psycopg.connect(w.running.dsn, autocommit=True) as conn, conn.cursor() as cur:
        assert certified.chain_height(cur) == height
        clock = certified.clock(cur, height)
        assert clock is not None
        before = list(clock.running_max)
        cur.execute(
            "UPDATE chain.blocks SET timestamp_ms = timestamp_ms + %s WHERE height = %s",
            (HOUR_MS, height),
        )
        try:
            assert certified.chain_height(cur) == height
            clock = certified.clock(cur, height)
            assert clock is not None and clock.running_max == before
            misled = ChainSigners().clock(cur, ChainSigners().chain_height(cur))
            assert misled is not None and misled.running_max[height] == genuine + HOUR_MS
            fresh = CertifiedSigners(w.sim.genesis, institution=INST)
            assert fresh.chain_height(cur) == height - 1  # the moved block does not verify
            clock = fresh.clock(cur, height - 1)
            assert clock is not None and clock.running_max == before[:height]
        finally:
            cur.execute(
                "UPDATE chain.blocks SET timestamp_ms = %s WHERE height = %s", (genuine, height)
            )
        assert fresh.chain_height(cur) == height  # put back, the block verifies again
        clock = fresh.clock(cur, height)
        assert clock is not None and clock.running_max == before


def test_a_revocation_row_flipped_to_active_still_revokes(world: World) -> None:
    w = world
    spare, gov = KeyPair.from_seed(os.urandom(32)), w.sim.gov(INST)
    register = register_identity_args(
        spare, chain_id=CHAIN_ID, institution_id=INST, kind="SERVICE", label="iam-spare"
    )
    w.sim.send([w.sim.tx(gov, "RegisterIdentity", register)])
    w.sim.finalize()
    w.sim.send([w.sim.tx(gov, "RevokeIdentity", {"key_id": spare.key_id})])
    revoked = w.sim.finalize()
    w.wait_height(revoked)
    with psycopg.connect(w.running.dsn, autocommit=True) as conn:
        flipped = conn.execute(
            "UPDATE chain.key_activity SET active = true WHERE key_id = %s AND height = %s "
            "AND NOT active",
            (spare.key_id, revoked),
        )
        assert flipped.rowcount == 1
    event_id = f"revoked-{uuid.uuid4().hex[:6]}"
    [offset] = produce(w, [sign_event(spare, INST, revoked, grant_event(w, event_id))])
    with two_views(w, offset) as (old, new):
        assert old.applied([event_id]) == {event_id}  # the flipped row believed
        assert new.applied([event_id]) == set()


def test_a_deactivation_row_written_into_postgres_rolls_nothing_back(world: World) -> None:
    """An inserted deactivation of the genuine IAM key would make a fresh ChainSigners reader
    refuse every later event of that key as stale (forgetting the disables and revocations
    they carried: a rollback by database write alone). CertifiedSigners takes the key's
    history from certified entries only, so the row changes nothing."""
    w = world
    height = w.running.projection.height
    kid = w.iam_key.key_id
    with psycopg.connect(w.running.dsn, autocommit=True) as conn, conn.cursor() as cur:
        registered = CertifiedSigners(w.sim.genesis, institution=INST)
        registered.chain_height(cur)
        genuine = registered.history(cur, [kid]).at(kid, height)
        assert genuine is not None and genuine.active and genuine.role == "SERVICE"
        cur.execute(
            "INSERT INTO chain.key_activity (key_id, height, institution_id, role, active, "
            "public_key) VALUES (%s, %s, %s, 'SERVICE', false, %s)",
            (kid, height, INST, w.iam_key.public_key),
        )
        try:
            misled = ChainSigners()
            info = misled.history(cur, [kid]).at(kid, misled.chain_height(cur))
            assert info is not None and not info.active  # the policy before: revoked
            fresh = CertifiedSigners(w.sim.genesis, institution=INST)
            assert fresh.chain_height(cur) == height
            assert fresh.history(cur, [kid]).at(kid, height) == genuine
        finally:
            cur.execute(
                "DELETE FROM chain.key_activity WHERE key_id = %s AND height = %s AND NOT active",
                (kid, height),
            )

"""IAM state the database's owner changed under the audit's feet, against the real broker
and PostgreSQL: a block's header stamp, and the IAM projection's position.

The database's owner is not trusted (docs/security.md). The live IAM projection reads the
header stamps of ``chain.blocks`` back from its database to apply D56's rule
(:meth:`projections.iam_signers.ChainSigners.clock`), so whoever can write that table can
move the rule's clock. Production readers use ``CertifiedSigners`` since D75 (which this
cannot mislead: ``test_iam_certified_signers.py``); this world keeps ``ChainSigners`` to
show the audit catching a misled reader. The world of
:mod:`tests.integration.test_iam_append_time` (S lowered to 1.5 s, a ticker cutting a block
every 0.3 s), its tests run in order:

* the IAM projection's position moved past an event it waits for (the chain idle): the
  audit cannot decide the event either and reports ``iam.unverifiable``; once a block is
  stamped late enough it refuses it (``future``, a warning) and is clean;
* untampered, ``pantheon audit`` is clean;
* the stamp of the block that revoked a SERVICE key is moved an hour ahead in
  ``chain.blocks``: the live projection then applies an event that key backdates (it should
  be ``stale_key``) and refuses a genuine event of the IAM key as ``future``;
* the audit, which takes stamps from the blocks its own replay certifies, reports the
  changed stamp (``chain.blocks``, the block's height, ``timestamp_ms`` expected and found)
  and both wrong IAM decisions as rows that should not exist and rows that are missing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psycopg
import pytest

from ledger.iam_events import sign_event
from ledger.keys import KeyPair
from tests.integration.test_iam_append_time import (
    S_MS,
    Ticker,
    produce_stamped,
    revoked_spare_key,
    timed,
)
from tests.integration.test_iam_trust import (
    INST,
    Running,
    World,
    applied,
    errors,
    group_event,
    groups,
    iam_position,
    refused,
    run_audit,
    wait_for,
)

pytestmark = pytest.mark.integration
__all__ = ["timed"]  # the module fixture, imported so pytest finds it here
HOUR_MS = 3_600_000


def stored_stamp(w: World, height: int) -> int:
    with psycopg.connect(w.running.dsn) as conn:
        row = conn.execute(
            "SELECT timestamp_ms FROM chain.blocks WHERE height = %s", (height,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def latest_stamp(w: World) -> int:
    """The newest header stamp the chain projection holds (0 before any block)."""
    with psycopg.connect(w.running.dsn) as conn:
        row = conn.execute("SELECT coalesce(max(timestamp_ms), 0) FROM chain.blocks").fetchone()
    assert row is not None
    return int(row[0])


def test_a_position_moved_past_an_undecided_event_is_unverifiable(
    timed: tuple[World, Ticker], tmp_path: Path
) -> None:
    """The database's owner moves the IAM projection's position past an event it waits for:
    the audit cannot decide it either (no block is stamped after its append time + S) and
    says so (ERROR ``iam.unverifiable``) rather than guess."""
    w, ticker = timed
    stranger = KeyPair.from_seed(os.urandom(32))
    with ticker.paused():
        attack = sign_event(stranger, INST, 2**62, group_event("undecided", w.root))
        offset, appended = produce_stamped(w, attack)
        wait_for(lambda: w.running.iam.waiting_for == 2**62, "the event waits")
        w.running.stop()
        with psycopg.connect(w.running.dsn, autocommit=True) as conn:
            conn.execute(
                "UPDATE projection_positions SET next_offset = %s WHERE projection = %s",
                (offset + 1, w.running.iam.name),
            )
        code, report = run_audit(w, tmp_path)
    w.running = Running(w.config)
    assert code == 1
    [finding] = errors(report)
    assert finding["kind"] == "iam.unverifiable" and finding["offset"] == offset
    assert f"has no block stamped after {appended + S_MS} ms" in finding["message"]
    # then the ticker's blocks reach one stamped after it (not merely the next height: the
    # restarted projector may still be catching up on blocks stamped before it)
    wait_for(lambda: latest_stamp(w) > appended + S_MS, "a block stamped after the event")
    code, report = run_audit(w, tmp_path)  # decided now: refused, a warning
    assert code == 0 and refused(report)[offset] == "future", errors(report)


def test_a_tampered_header_stamp_misleads_the_live_projection_and_the_audit_reports_it(
    timed: tuple[World, Ticker], tmp_path: Path
) -> None:
    w, ticker = timed
    code, report = run_audit(w, tmp_path)
    assert code == 0 and errors(report) == [], errors(report)

    spare, registered, revoked = revoked_spare_key(w, ticker)
    genuine_stamp = stored_stamp(w, revoked)
    forged_stamp = genuine_stamp + HOUR_MS
    with psycopg.connect(w.running.dsn, autocommit=True) as conn:  # the database's owner
        conn.execute(
            "UPDATE chain.blocks SET timestamp_ms = %s WHERE height = %s",
            (forged_stamp, revoked),
        )
    time.sleep(S_MS / 1000 + 0.5)  # more than S after the revocation block's genuine stamp
    backdated = sign_event(spare, INST, registered, group_event("backdated-spare", w.root))
    stale_offset, _ = produce_stamped(w, backdated)
    honest_height = w.running.projection.height  # above the revocation
    honest = sign_event(w.iam_key, INST, honest_height, group_event("honest", w.root))
    honest_offset, _ = produce_stamped(w, honest)
    wait_for(lambda: iam_position(w) > honest_offset, "both decided")
    # what the moved clock made the live projection do: the revocation seems an hour away
    assert "backdated-spare" in groups(w) and stale_offset in applied(w)
    assert "honest" not in groups(w) and w.running.iam.rejected["future"] == 1

    code, report = run_audit(w, tmp_path)
    assert code == 1
    found = errors(report)
    [stamp] = [f for f in found if f["check"] == "projection"]
    assert stamp["kind"] == "row.differs"
    assert stamp["message"] == f"chain.blocks: row {{'height': {revoked}}} differs in timestamp_ms"
    assert stamp["details"]["table"] == "blocks"
    assert stamp["details"]["columns"] == {
        "timestamp_ms": {"expected": genuine_stamp, "got": forged_stamp}
    }
    iam = {(f["kind"], f["details"]["table"], tuple(f["details"]["key"].values())) for f in found}
    assert iam - {("row.differs", "blocks", (revoked,))} == {
        ("iam.row.unexpected", "iam_groups", ("backdated-spare",)),
        ("iam.row.unexpected", "iam_events", ("ev-backdated-spare",)),
        ("iam.row.missing", "iam_groups", ("honest",)),
        ("iam.row.missing", "iam_events", ("ev-honest",)),
    }
    assert refused(report)[stale_offset] == "stale_key" and honest_offset not in refused(report)

"""Broker loss: a 4-institution consortium on a 3-broker KRaft cluster (replication factor 3,
``min.insync.replicas=2``, idempotent ``acks=all`` producers) loses brokers under load.

1. One broker (the leader of the tx partition) is SIGKILLed and restarted a little later. The
   chain keeps finalizing while it is down: a transaction submitted after the kill becomes
   final and the final height grows before the broker comes back.
2. Two brokers are SIGKILLed together (the KRaft quorum and the in-sync minimum are lost). A
   producer with ``message.timeout.ms=5000`` gets a delivery report for every message before
   the deadline (failures, not silence); finality pauses (every height final before they
   are back is certified by votes appended before the kill); a producer with the default
   configuration only waits. Both brokers are restarted: finality resumes.

At the end every transaction the broker acknowledged is final exactly once with result OK
(lost = 0, duplicated = 0), no transaction at all is final twice, the heights are contiguous,
every certified block equals the oracle's re-execution of the tx log, no operator signed two
hashes for one height, and every validator reaches the top height without diverging.
``pytest -s`` shows the figures.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from harness.consortium import Consortium, HarnessError, read_partition
from harness.stack_fixtures import private_settings
from infra.errors import PortTakenError
from infra.kafka_server import KafkaCluster, KafkaNode
from ledger.blocks import decode_finalized
from ledger.results import ResultCode
from ledger.votes import decode_vote
from tests.faults.load_threads import Producing
from tests.integration.test_consensus import check_chain, check_votes, operators

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SHORT_TIMEOUT_MS = 5000
"""``message.timeout.ms`` of the producer that runs through the loss of two brokers."""
PAUSE_WINDOW = 4.0
"""Seconds over which the outage is watched (after the final height settled for 2 s)."""


@dataclass(slots=True)
class Heights:
    """Final heights around one fault."""

    before: int = -1
    during: int = -1
    during_end: int = -1
    after: int = -1


@pytest.fixture
def cluster() -> Iterator[KafkaCluster]:
    """A private 3-node KRaft cluster (RF 3, min ISR 2); every node stopped afterwards."""
    for attempt in range(3):
        settings = private_settings(brokers=3)
        kafka = KafkaCluster(settings)
        try:
            kafka.start(timeout=150)
        except PortTakenError:
            kafka.stop()
            shutil.rmtree(settings.state_dir, ignore_errors=True)
            if attempt == 2:
                raise
            continue
        except BaseException:
            kafka.stop()
            shutil.rmtree(settings.state_dir, ignore_errors=True)
            raise
        try:
            yield kafka
        finally:
            for n in kafka.nodes:  # SIGKILL: the data is thrown away, no controlled shutdown
                kafka.stop_node(n, kill=True)
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        return


@pytest.fixture
def consortium(cluster: KafkaCluster, unique: str, tmp_path: Path) -> Iterator[Consortium]:
    c = Consortium(
        cluster.settings.bootstrap_servers,
        tmp_path / "c",
        4,
        prefix=f"bl{unique}.",
        block_interval_ms=200,
        max_block_txs=100,
    )
    try:
        yield c
    finally:
        c.close()


# -- helpers ----------------------------------------------------------------------------------


def node(cluster: KafkaCluster, node_id: int) -> KafkaNode:
    return next(n for n in cluster.nodes if n.node_id == node_id)


def leader(c: Consortium, suffix: str) -> int:
    """The node id leading partition 0 of ``<prefix><suffix>``."""
    topic = c.topic(suffix)
    meta = c.admin.list_topics(topic=topic, timeout=10).topics[topic]
    return int(meta.partitions[0].leader)


def wait_in_sync(c: Consortium, cluster: KafkaCluster, timeout: float = 120.0) -> None:
    """Wait until every node runs and every partition of the chain's topics has a leader and
    all 3 replicas in sync (a restarted broker has caught up)."""

    def in_sync() -> bool:
        if len(cluster.running()) != len(cluster.nodes):
            return False
        try:
            topics = c.admin.list_topics(timeout=5).topics
        except Exception:
            return False
        ours = [t for name, t in topics.items() if name.startswith(c.prefix)]
        return bool(ours) and all(
            p.leader >= 0 and len(p.isrs) == 3 for t in ours for p in t.partitions.values()
        )

    c.wait_until(
        in_sync, timeout=timeout, what="all 3 replicas in sync", alive=c.institutions, interval=0.5
    )


def top(c: Consortium) -> int:
    """The highest final height any validator reports."""
    return c.max_final(c.institutions)


def settled_top(c: Consortium, *, quiet: float = 2.0, timeout: float = 30.0) -> int:
    """The highest reported final height once it stopped changing for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = top(c), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = top(c)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise HarnessError(f"final height kept moving for {timeout:.0f}s\n{c.tails()}")


def votes_appended_after(c: Consortium, heights: range, wall: float) -> list[tuple[int, float]]:
    """(height, broker append time) of each certificate vote of the final blocks ``heights``
    that was appended to the votes topic after the wall time ``wall`` (or is missing)."""
    appended: dict[bytes, float] = {}  # by signature: one per operator, height and hash
    for msg in read_partition(c.bootstrap, c.topic("votes")):
        appended.setdefault(decode_vote(msg.value).signature, msg.timestamp_ms / 1000)
    late: list[tuple[int, float]] = []
    for msg in read_partition(c.bootstrap, c.topic("blocks")):
        header, cert, _ = decode_finalized(msg.value)
        if header.height not in heights:
            continue
        for v in cert["votes"]:
            at = appended.get(v["signature"], float("inf"))
            if at > wall:
                late.append((header.height, at))
    return late


def final_entries(c: Consortium) -> dict[bytes, list[tuple[int, int]]] | None:
    """:meth:`Consortium.final_entries` with a short read timeout, or None when the blocks
    topic cannot be read now (its leader is gone and no new one is elected yet)."""
    try:
        messages = read_partition(c.bootstrap, c.topic("blocks"), timeout=5.0)
    except (KafkaException, HarnessError):
        return None
    out: dict[bytes, list[tuple[int, int]]] = {}
    seen: set[int] = set()
    for m in messages:
        header, _, results = decode_finalized(m.value)
        if header.height not in seen:
            seen.add(header.height)
            for r in results:
                out.setdefault(r.tx_id, []).append((header.height, int(r.code)))
    return out


def wait_final_txs(c: Consortium, tids: set[bytes], what: str, timeout: float = 120.0) -> None:
    def all_final() -> bool:
        entries = final_entries(c)
        return entries is not None and all(t in entries for t in tids)

    c.wait_until(all_final, timeout=timeout, what=what, alive=c.institutions, interval=0.5)


def check_agreement(c: Consortium) -> int:
    """Contiguous heights, one certified version per height equal to the oracle, nobody
    signed twice, every validator reached the top without diverging; returns the top."""
    height, _replay = check_chain(c)
    c.wait_final(height, c.institutions, timeout=90)
    check_votes(c, operators(c))
    for inst in c.institutions:
        status = c.status(inst)
        assert status is not None and not status["diverged"], (inst, status)
    return height


# -- the test ---------------------------------------------------------------------------------


def test_broker_loss_loses_and_duplicates_nothing(
    cluster: KafkaCluster, consortium: Consortium
) -> None:
    c = consortium
    started = time.monotonic()
    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{what} {time.monotonic() - started:.0f}s")

    c.start_all()
    c.wait_ready(c.institutions, timeout=90)
    # a default-configured producer runs from start to end; a short-timeout one through phase 2
    steady = Producing(c, c.gov_key("inst-2"), "steady", rate=20).start()
    short: Producing | None = None
    one, two = Heights(), Heights()
    try:
        c.wait_until(lambda: top(c) >= 1, timeout=90, what="a final block", alive=c.institutions)
        mark("first block")

        # -- phase 1: SIGKILL the tx leader; the chain keeps finalizing without it ----------
        victim = leader(c, "tx")
        one.before = top(c)
        submitted = len(steady.order)
        cluster.stop_node(node(cluster, victim), kill=True)
        t_kill = time.monotonic()

        def finalized_during_outage() -> bool:
            fresh = set(steady.order[submitted:])
            entries = final_entries(c) if top(c) > one.before else None
            return entries is not None and any(t in entries for t in fresh)

        c.wait_until(
            finalized_during_outage,
            timeout=90,
            what=f"a tx submitted after broker {victim} was killed to become final",
            alive=c.institutions,
            interval=0.5,
        )
        one.during = top(c)
        assert cluster.running() == [n.node_id for n in cluster.nodes if n.node_id != victim]
        outage1 = time.monotonic() - t_kill
        cluster.start_node(node(cluster, victim))
        mark("phase 1 restart")
        wait_in_sync(c, cluster)
        acked1 = set(steady.acked)
        wait_final_txs(c, acked1, f"{len(acked1)} txs acknowledged in phase 1 to be final")
        one.after = top(c)
        assert one.during > one.before, one
        mark("phase 1 in sync")

        # -- phase 2: SIGKILL two brokers; delivery fails or waits, finality pauses ---------
        short = Producing(
            c, c.gov_key("inst-3"), "short", rate=20, **{"message.timeout.ms": SHORT_TIMEOUT_MS}
        ).start()
        short.flush_timeout = 30.0
        c.wait_until(
            lambda: short is not None and len(short.acked) >= 10,
            timeout=60,
            what="10 acknowledgements of the short-timeout producer",
            alive=c.institutions,
        )
        first = leader(c, "tx")
        second = leader(c, "votes")
        if second == first:
            second = next(n.node_id for n in cluster.nodes if n.node_id != first)
        victims = [first, second]
        two.before = top(c)
        steady_from = len(steady.order)
        for v in victims:
            cluster.stop_node(node(cluster, v), kill=True)
        t_kill, killed_wall = time.monotonic(), time.time()
        short_from = len(short.order)
        # finality may still catch up with votes committed before the kill; then it stops
        two.during = settled_top(c)
        window = time.monotonic()
        short.stop()  # every message reported (acknowledged or failed) before the restart
        time.sleep(max(0.0, PAUSE_WINDOW - (time.monotonic() - window)))
        two.during_end = top(c)  # a final height never goes down: the window's maximum
        after_kill = short.order[short_from:]
        assert after_kill and all(t in short.failed for t in after_kill), (
            "every message submitted with 2 of 3 brokers down must be reported failed",
            len(after_kill),
            sum(1 for t in after_kill if t in short.acked),
        )
        waiting = [t for t in steady.order[steady_from:] if t not in steady.acked]
        assert waiting and not steady.failed, (
            "the default producer should wait (not fail) while 2 brokers are down",
            len(waiting),
            list(steady.failed.values())[:3],
        )
        outage2 = time.monotonic() - t_kill
        for v in victims:
            cluster.start_node(node(cluster, v))
        mark("phase 2 restart")
        c.wait_until(
            lambda: top(c) > two.during,
            timeout=120,
            what=f"finality to resume above {two.during} after restarting brokers {victims}",
            alive=c.institutions,
            interval=0.5,
        )
        mark("phase 2 resumed")
        # A validator whose consumer was reconnecting may read votes committed before the
        # kill seconds later, so the height may still grow in the window; but every height
        # final by its end must be certified by votes appended before the kill: nothing can
        # be committed with 2 of 3 brokers down. (The heights just before the kill are
        # checked too, so the lookup is exercised even when nothing was final in the window.)
        judged = range(max(1, two.before - 4), two.during_end + 1)
        late = votes_appended_after(c, judged, killed_wall)
        assert not late, (
            f"heights up to {two.during_end} were final with 2 of 3 brokers down, certified "
            f"by votes appended after the kill: {late}"
        )
    except BaseException:
        for p in (steady, short):
            if p is not None:
                p.stop_event.set()
        raise
    steady.stop()  # delivers the backlog queued while two brokers were down

    # -- the end: nothing acknowledged lost, nothing duplicated, validators agree -----------
    producers = [steady, short]
    produced = {t: r for p in producers for t, r in p.produced.items()}
    acked = steady.acked | short.acked
    failed = {**steady.failed, **short.failed}
    wait_final_txs(c, acked, f"every one of {len(acked)} acknowledged txs to be final")
    two.after = check_agreement(c)
    entries = c.final_entries()
    lost = sum(1 for t in acked if t not in entries)
    duplicated = sum(1 for t in produced if len(entries.get(t, [])) > 1)
    not_ok = [t for t in acked if entries[t][0][1] != ResultCode.OK]
    final = sum(1 for t in produced if t in entries)
    failed_final = sum(1 for t in failed if t in entries)
    assert acked.isdisjoint(failed), "a message reported both acknowledged and failed"
    assert (lost, duplicated, len(not_ok)) == (0, 0, 0), (lost, duplicated, len(not_ok))
    assert final == len(acked) + failed_final
    mark("checked")
    print(
        f"\nbroker loss: phase 1 SIGKILLed broker {victim} (tx leader) for {outage1:.0f}s, "
        f"final height before {one.before}, during {one.during}, after {one.after}; "
        f"phase 2 SIGKILLed brokers {victims} for {outage2:.0f}s, final height before "
        f"{two.before}, during {two.during}..{two.during_end}, after {two.after}; "
        f"tx produced {len(produced)}, acknowledged {len(acked)}, failed {len(failed)} "
        f"({failed_final} of them final anyway: possibly persisted), final {final}, "
        f"lost {lost}, duplicated {duplicated}; slowest failure report "
        f"{short.slowest_failure():.1f}s after produce (message.timeout.ms={SHORT_TIMEOUT_MS}), "
        f"first: {next(iter(failed.values()), None)}; default producer waited for "
        f"{len(waiting)} txs and lost none; validator exit codes {c.exit_codes}; "
        f"timeline: {', '.join(timeline)}"
    )

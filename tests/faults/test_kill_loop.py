"""The kill loop: under continuous load from several producers and a client of the gateway,
SIGKILL a random process (one of 4 validators, the chain projector, the Layer-2 batcher,
inst-1's gateway) at random moments, ``PANTHEON_KILLS`` times (default 20), restarting each
at once.

At the end: every transaction the broker acknowledged is final exactly once (result OK), all
validators agree on every block (one certified version per height, equal to the oracle's
re-execution of the tx log), the killed projector's tables equal the replay, every Layer-2
reading the broker acknowledged is in a committed batch whose root a final block holds (a
sample is proven offline end to end), and the gateway answers queries again. The history
figures are printed, the gateway's beside them.

The gateway (``python -m gateway.server`` of ``inst-1``, started as
:mod:`tests.faults.test_hostile_clients` does, on a fixed loopback port) reads the killed
projector's database; the projector process also runs inst-1's IAM projection, so the
administrator and the client user made through the gateway's GraphQL API before the loop
outlive every kill of either. A client thread signs ``AnchorData`` with a USER key of inst-1
and submits each envelope *once* with ``submitTransaction`` at a steady rate.

What "acknowledged" means, and what is asserted
-----------------------------------------------
* **Acknowledged** = the gateway answered ``200`` with a payload whose ``txId`` is the
  envelope's: ``KafkaSubmitter`` answers only after the broker acknowledged the produce
  (idempotent, ``acks=all``). Anything else is **failed**: connection refused (the gateway
  is down, restarting), connection cut mid-request (killed while answering), a timeout, or a
  typed refusal (``UNAVAILABLE`` ...).
* A failed envelope may still be in the tx log: the gateway may be killed after the broker
  acknowledged but before it answered, and an envelope whose delivery timed out stays queued
  in its producer. So the client never resends an envelope (same bytes twice would put one tx
  id in the log twice); after a failure it signs the *next* operation with the *same* nonce,
  and moves to the next nonce only once an envelope is acknowledged. Of two envelopes with
  one nonce, the first in the log is executed (OK), the other rejected (``BAD_NONCE``,
  changing nothing).
* Asserted, exactly: every acknowledged envelope is final exactly once (lost = 0,
  duplicated = 0), with result OK -- or ``BAD_NONCE`` when, and only when, an
  unacknowledged envelope of the same nonce is final with OK (it came first); no envelope
  (acknowledged or not) is final twice; the client's OK transactions have the nonces
  0 .. k-1 once each (k = the number acknowledged), plus k if a failed envelope after the
  last acknowledged one landed anyway; every final entry of the client is OK or
  ``BAD_NONCE``. An unacknowledged
  envelope may or may not be final (counted as "failed but final").
* After the loop the (restarted) gateway answers a query: its summary height reaches the
  final height and its ``block`` at that height has the oracle's hash.

Long run by hand: ``PANTHEON_KILLS=100 .venv/bin/pytest -s tests/faults/test_kill_loop.py``
(its pytest timeout grows by 4 s per kill beyond the session's 300 s).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from harness.consortium import REPO, Consortium, Replay, anchor_args, new_key
from harness.l2_support import INSTITUTION, L2Stack, workload
from harness.projections_support import expected_rows, projected_rows, projector_argv
from infra.postgres_server import Postgres
from infra.procs import free_port, tail
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.members import key_key
from ledger.proofs import verify_record_proof
from ledger.results import ResultCode
from ledger.tx import parse_tx, sign_tx
from readers.proofs import record_proof
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from streams.sdk import LedgerClient
from tests.faults.load_threads import LoadThread, Producing
from tests.faults.test_hostile_clients import (
    GRANT,
    HOST,
    GatewayProcess,
    Institution,
    set_up_accounts,
)
from tests.iam_keys import iam_key
from tests.integration.test_consensus import check_chain, check_votes, operators

KILLS = int(os.environ.get("PANTHEON_KILLS", "20"))
# the session's 300 s covers the CI size; a long run by hand gets about 4 s more per kill
pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.timeout(max(300, 60 + 4 * KILLS)),
]
BATCHER_ARGS = ("--max-records", "200", "--window-ms", "300", "--instance-id", "b1")
GATEWAY_RATE = 5.0  # submissions per second through the gateway


class Projector:
    """The chain projector of inst-1 as an OS process on its own database."""

    def __init__(self, stack: L2Stack, postgres: Postgres, workdir: Path) -> None:
        self.dbname = f"kl_{uuid.uuid4().hex[:10]}"
        self.dsn = postgres.dsn(self.dbname)
        self.log = workdir / "projector.log"
        c = stack.consortium
        server, self.secret_env = postgres.child_dsn("postgres")  # no password in argv
        self.argv = projector_argv(
            c.genesis_path, c.bootstrap, c.prefix, server, self.dbname, "--batch-size", "200"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.secret_env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=out, cwd=REPO, env=env, start_new_session=True
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def height(self) -> int:
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                row = conn.execute("SELECT height FROM chain.meta").fetchone()
                return int(row[0]) if row else -1
        except psycopg.Error:
            return -1


class Gateway(GatewayProcess):
    """inst-1's gateway process on the killed projector's database, on one fixed port.

    As in :mod:`tests.faults.test_hostile_clients`, but without ``--iam-projection``: the
    projector process runs inst-1's IAM projection on the same database (as in production),
    and the port is kept across restarts so that the client keeps its address. GraphQL
    calls get a generous timeout and no deadline: this test is about correctness."""

    graphql_timeout_s = 30.0
    graphql_deadline_s = None

    def __init__(self, stack: L2Stack, projector: Projector, postgres: Postgres, workdir: Path):
        c = stack.consortium
        super().__init__(
            INSTITUTION,
            dbname=projector.dbname,
            bootstrap=c.bootstrap,
            prefix=c.prefix,
            postgres=postgres,
            workdir=workdir,
        )
        self.dsn = projector.dsn
        self.argv_base.remove("--iam-projection")
        # production wiring: the IAM key is registered on chain (register_iam_key)
        self.argv_base[self.argv_base.index("tests.faults.pinned_gateway")] = "gateway.server"
        self.starts = 0

    def start(self) -> None:
        self.port = self.port or free_port(HOST)
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [*self.argv_base, "--port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=self.env,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()


SUBMIT = (
    "mutation($e: String!) { submitTransaction(envelope: $e)"
    " { txId nonce error { code message } } }"
)


def register_user_key(c: Consortium, user: KeyPair | None = None, kind: str = "USER") -> KeyPair:
    """A USER (or ``kind``) key of inst-1 on chain (registered by inst-1's governance key,
    which the Layer-2 set-up already used: its next nonce comes from the oracle)."""
    gov = c.gov_key(INSTITUTION)
    record = c.replay().state_get(key_key(gov.key_id))
    assert record is not None
    user = user or new_key()
    with LedgerClient(
        c.bootstrap,
        gov,
        c.chain_id,
        prefix=c.prefix,
        genesis=c.genesis,
        next_nonce=int(record["next_nonce"]),
    ) as client:
        receipt = client.submit_and_wait(
            "RegisterIdentity",
            register_identity_args(
                user,
                chain_id=c.chain_id,
                institution_id=INSTITUTION,
                kind=kind,
                label="gateway client",
            ),
        )
    assert receipt.accepted, receipt
    return user


def key_projected(projector: Projector, key: KeyPair) -> bool:
    try:
        with psycopg.connect(projector.dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT 1 FROM chain.key_activity WHERE key_id = %s AND active", (key.key_id,)
            ).fetchone()
    except psycopg.Error:
        return False
    return row is not None


class GatewayClient(LoadThread):
    """A client thread: ``AnchorData`` signed with its own key, each envelope submitted once
    through the gateway's ``submitTransaction`` at a steady rate; the nonce advances only
    when the gateway acknowledged (see the module docstring)."""

    def __init__(self, gw: Gateway, token: str, signer: KeyPair, chain_id: str, rate: float):
        super().__init__("gateway-client")
        self.gw, self.token, self.signer, self.chain_id = gw, token, signer, chain_id
        self.interval = 1.0 / rate
        self.nonce_of: dict[bytes, int] = {}  # every envelope submitted: tx id -> nonce
        self.acked: set[bytes] = set()
        self.failures: Counter[str] = Counter()  # failed submissions by kind

    def _submit(self, raw: bytes, tx_id: bytes) -> str:
        """``ok``, or the kind of failure (``down``, ``cut: ...``, ``refused: ...``)."""
        payload = json.dumps({"query": SUBMIT, "variables": {"e": base64.b64encode(raw).decode()}})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
        conn = http.client.HTTPConnection(HOST, self.gw.port, timeout=30)
        try:
            conn.request("POST", "/graphql", body=payload.encode(), headers=headers)
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        except ConnectionRefusedError:
            return "down"  # the gateway is not listening (killed, restarting)
        except (OSError, http.client.HTTPException) as exc:
            return f"cut: {type(exc).__name__}"  # killed mid-request, or a timeout
        finally:
            conn.close()
        try:
            answer = json.loads(body)
            result = answer["data"]["submitTransaction"]
        except (ValueError, KeyError, TypeError):
            return f"refused: HTTP {status}"
        if result.get("error"):
            return f"refused: {result['error']['code']}"
        assert status == 200 and result["txId"] == tx_id.hex(), (status, answer)
        return "ok"

    def work(self) -> None:
        nonce = i = 0
        while not self.stop_event.is_set():
            raw = sign_tx(
                self.signer,
                chain_id=self.chain_id,
                nonce=nonce,
                operation="AnchorData",
                args=anchor_args(f"gw-{i}"),
            )
            tx_id = parse_tx(raw).tx_id
            self.nonce_of[tx_id] = nonce
            outcome = self._submit(raw, tx_id)
            if outcome == "ok":
                self.acked.add(tx_id)
                nonce += 1
            else:
                self.failures[outcome] += 1
            i += 1
            self.stop_event.wait(self.interval)

    def check(self, entries: dict[bytes, list[tuple[int, int]]]) -> dict[str, int]:
        """The assertions of the module docstring on the final entries; the figures."""
        mine = {t: entries[t] for t in self.nonce_of if t in entries}
        lost = sum(1 for t in self.acked if t not in mine)
        duplicated = sum(1 for t in self.nonce_of if len(mine.get(t, [])) > 1)
        assert (lost, duplicated) == (0, 0), ("gateway", lost, duplicated)
        codes = {t: ResultCode(e[0][1]) for t, e in mine.items()}
        assert set(codes.values()) <= {ResultCode.OK, ResultCode.BAD_NONCE}, Counter(codes.values())
        ok_by_nonce: dict[int, list[bytes]] = {}
        for t, code in codes.items():
            if code is ResultCode.OK:
                ok_by_nonce.setdefault(self.nonce_of[t], []).append(t)
        assert all(len(ts) == 1 for ts in ok_by_nonce.values()), ok_by_nonce
        k = len(self.acked)
        assert set(range(k)) <= set(ok_by_nonce) <= set(range(k + 1)), (k, sorted(ok_by_nonce))
        bad_nonce = [t for t in self.acked if codes[t] is ResultCode.BAD_NONCE]
        for t in bad_nonce:  # the nonce went to an unacknowledged envelope that landed first
            (winner,) = ok_by_nonce[self.nonce_of[t]]
            assert winner not in self.acked, (t.hex(), winner.hex())
        return {
            "submitted": len(self.nonce_of),
            "acknowledged": k,
            "final": len(mine),
            "failed but final": sum(1 for t in mine if t not in self.acked),
            "acknowledged BAD_NONCE": len(bad_nonce),
            "lost": lost,
            "duplicated": duplicated,
        }


@pytest.fixture
def stack(bootstrap: str, postgres: Postgres, tmp_path: Path) -> Iterator[L2Stack]:
    s = L2Stack(bootstrap, postgres.dsn("postgres"), tmp_path, devices=10, n=4)
    try:
        yield s
    finally:
        s.close()


def wait_for(check: object, timeout: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_kill_loop_loses_and_duplicates_nothing(
    stack: L2Stack, postgres: Postgres, tmp_path: Path
) -> None:
    c = stack.consortium
    c.wait_ready(c.institutions)
    ensure_topics(
        AdminClient(admin_config(c.bootstrap)), prefix=c.prefix, institutions=[INSTITUTION]
    )
    projector = Projector(stack, postgres, tmp_path)
    gateway = Gateway(stack, projector, postgres, tmp_path)
    try:
        run_kill_loop(stack, projector, gateway)
    except BaseException:
        print(f"--- {gateway.log} ---\n{tail(gateway.log, 40)}")
        print(f"--- {projector.log} ---\n{tail(projector.log, 40)}")
        raise
    finally:
        gateway.kill()
        projector.kill()


def start_gateway(c: Consortium, projector: Projector, gateway: Gateway) -> GatewayClient:
    """The gateway, its administrator and a client user (chain:read, chain:write) made through
    its GraphQL API, and the client thread submitting through it."""
    register_user_key(c, iam_key(INSTITUTION), "SERVICE")  # the gateway's IAM key (D21)
    user_key = register_user_key(c)
    wait_for(lambda: projector.height() >= 1, 60, "the projector's database")
    wait_for(lambda: key_projected(projector, iam_key(INSTITUTION)), 60, "the IAM key projected")
    gateway.start()
    gateway.wait_healthy()
    inst = Institution(gateway, projector.dsn)
    set_up_accounts(inst, "kl-client")
    gateway.mutate(GRANT, inst.admin_token, s=inst.user_id, perm="chain:write")
    token = gateway.login("kl-client")["token"]
    return GatewayClient(gateway, token, user_key, c.chain_id, rate=GATEWAY_RATE).start()


def run_kill_loop(stack: L2Stack, projector: Projector, gateway: Gateway) -> None:
    c = stack.consortium
    projector.start()
    stack.start_batcher(*BATCHER_ARGS)
    client = start_gateway(c, projector, gateway)
    # inst-1's governance key already signed through the SDK (set-up): the others produce
    producers = [
        Producing(c, c.gov_key(inst), f"p-{inst}", rate=8).start() for inst in c.institutions[1:]
    ]
    w = workload(stack.devices, 40 * KILLS, bad_every=25)
    chunks = [w.messages[i : i + 40] for i in range(0, len(w.messages), 40)]
    rng = random.Random(int(os.environ.get("PANTHEON_KILL_SEED", "11")))
    victims = [*c.institutions, "projector", "batcher", "gateway"]
    kills: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for n in range(KILLS):
            if n < len(chunks):
                stack.send(chunks[n])
            time.sleep(rng.uniform(0.2, 1.0))
            victim = rng.choice(victims)
            if n == KILLS - 1 and not kills["gateway"]:
                victim = "gateway"  # whatever the seed, the gateway is killed at least once
            if victim == "projector":
                projector.kill()
                projector.start()
            elif victim == "batcher":
                stack.kill_batcher()
                stack.start_batcher(*BATCHER_ARGS)
            elif victim == "gateway":
                gateway.kill()
                gateway.start()
            else:
                c.kill(victim)
                c.restart(victim)
            kills[victim] += 1
        for chunk in chunks[KILLS:]:
            stack.send(chunk)
    finally:
        client.stop()
        for p in producers:
            p.stop()
    loop_s = time.monotonic() - started
    produced = {t: r for p in producers for t, r in p.produced.items()}
    acked = set().union(*(p.acked for p in producers))
    failed = [f for p in producers for f in p.failed.values()]

    # every acknowledged transaction is final, exactly once (result OK for the producers;
    # the gateway client's results are checked by GatewayClient.check)
    def all_final() -> bool:
        entries = c.final_entries()
        return all(len(entries.get(t, [])) >= 1 for t in acked | client.acked)

    c.wait_until(all_final, timeout=120, what="every acknowledged tx final")
    stack.wait_done(w, timeout=120)
    top, replay = check_chain(c)
    c.wait_final(top, c.institutions, timeout=90)
    entries = c.final_entries()
    duplicated = sum(1 for t in acked if len(entries.get(t, [])) > 1)
    lost = sum(1 for t in acked if not entries.get(t))
    not_ok = [t for t in acked if entries.get(t) and entries[t][0][1] != ResultCode.OK]
    final = sum(1 for t in produced if entries.get(t))
    assert (lost, duplicated, not_ok) == (0, 0, []), (lost, duplicated, len(not_ok))
    via_gateway = client.check(entries)
    check_votes(c, operators(c))
    for inst in c.institutions:
        status = c.status(inst)
        assert status is not None and not status["diverged"], (inst, status)

    # the killed projector equals the replay
    wait_for(lambda: projector.height() >= top, 90, f"projector at {top}")
    time.sleep(1.0)
    assert projector.stop() == 0, projector.log.read_text()[-3000:]
    height = projector.height()
    upto = Replay(machine=replay.machine, blocks=replay.blocks[:height])
    assert height >= top and projected_rows(projector.dsn) == expected_rows(upto)

    # the gateway, restarted after its last kill, answers queries from that projection
    gateway.wait_healthy()
    code, body = gateway.graphql(
        "query($h: Int) { summary { height } block(height: $h) { height hash } }",
        client.token,
        h=height,
    )
    assert code == 200 and "errors" not in body, body
    assert body["data"]["summary"]["height"] == height, body
    assert body["data"]["block"] == {
        "height": height,
        "hash": replay.block(height).block_hash.hex(),
    }

    # every acknowledged reading is anchored once under a root of a final block; a sample
    # is proven offline from the genesis alone
    stack.check(w)
    with stack.connect() as conn:
        for kid, seq in random.Random(3).sample(sorted(w.valid), min(20, len(w.valid))):
            proof = record_proof(conn, kid, seq)
            assert proof is not None, (kid.hex(), seq)
            assert verify_record_proof(proof, c.genesis).sequence == seq
    print(
        f"\nkill loop: {sum(kills.values())} SIGKILLs in {loop_s:.0f}s {dict(kills)}; "
        f"tx produced {len(produced)}, acknowledged {len(acked)}, final {final}, "
        f"lost {lost}, duplicated {duplicated}, producer errors {len(failed)}; "
        f"via the gateway ({gateway.starts} starts): submitted {via_gateway['submitted']}, "
        f"acknowledged {via_gateway['acknowledged']}, failed while it was down "
        f"{client.failures['down']}, other failures "
        f"{dict((k, v) for k, v in client.failures.items() if k != 'down')}, "
        f"final {via_gateway['final']} (of them failed but final "
        f"{via_gateway['failed but final']}, acknowledged but BAD_NONCE "
        f"{via_gateway['acknowledged BAD_NONCE']}), lost {via_gateway['lost']}, "
        f"duplicated {via_gateway['duplicated']}, answers at height {height}; "
        f"final height {top}, projector height {height}; L2 readings {len(w.valid)} "
        f"acknowledged and anchored, {sum(w.rejects.values())} hostile rejected; "
        f"validator exit codes {c.exit_codes}"
    )

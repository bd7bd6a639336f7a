"""A consortium of real validator processes on the real broker, and an independent oracle.

Theory of operation
-------------------
* :class:`Consortium` writes a genesis and keystores with :func:`infra.keystore.create_genesis`
  (institutions ``inst-1`` .. ``inst-n``), creates the ledger topics under its own prefix and
  runs one ``python -m streams.validator`` OS process per institution, each with its own state
  directory and log files in the work directory. Processes are started, killed (SIGKILL),
  stopped (SIGTERM) and restarted by institution id (or, for an institution's further
  operators, by a node name such as ``inst-1.op1``: :meth:`Consortium.start_operator`);
  :meth:`Consortium.close` kills whatever still runs and prints the tail of every log
  (pytest shows it when a test fails).
* Observation goes through what the validators publish: ``status.json`` in their state
  directories, and the ``blocks`` and ``receipts`` topics read from offset 0.
* The oracle (:func:`replay_log`, :meth:`Consortium.replay`) re-reads ``<prefix>tx`` from
  offset 0 and drives the pure core (:class:`ledger.follower.ChainFollower`) in this
  process: the block hashes, validator sets and state it derives owe nothing to the
  validator processes.
* Transactions are signed in the test process with :func:`ledger.tx.sign_tx` and produced
  with a plain idempotent producer; nonces are tracked per key (thread-safe), assuming every
  transaction built with an implicit nonce is accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from infra.keystore import create_genesis, write_secret
from ledger.blocks import BlockHeader, EntryResult, decode_finalized
from ledger.execution import ExecutedBlock, LedgerMachine
from ledger.follower import ChainFollower
from ledger.genesis import Genesis
from ledger.keys import SEED_BYTES, KeyPair
from ledger.members import ValidatorSet
from ledger.tx import sign_tx
from runtime.delivery import close_producer
from runtime.kafka_config import admin_config, consume_ready, consumer_config, producer_config
from runtime.topics import ensure_topics
from schemas.codec import decode

REPO = Path(__file__).resolve().parent.parent
CHAIN_ID = "consensus-test"


class HarnessError(AssertionError):
    """The consortium did not reach an expected condition (the message carries log tails)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogMessage:
    """One message of a topic partition."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


Decoded = tuple[BlockHeader, dict[str, Any], tuple[EntryResult, ...]]


@dataclass(slots=True, kw_only=True)
class Replay:
    """What the pure core derives from the tx log: every cut block, executed and committed."""

    machine: LedgerMachine
    blocks: list[ExecutedBlock] = field(default_factory=list)
    pending_entries: int = 0
    last_offset: int = -1

    @property
    def height(self) -> int:
        """Height of the last complete block of the log."""
        return len(self.blocks)

    def block(self, height: int) -> ExecutedBlock:
        """The executed block at ``height`` (1-based)."""
        return self.blocks[height - 1]

    def hashes(self) -> dict[int, bytes]:
        """Block hash by height."""
        return {b.header.height: b.block_hash for b in self.blocks}

    def validator_set(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` (members after ``height - 1``), up to the next one."""
        if height == self.height + 1:
            return self.machine.validator_set()
        return self.block(height).validator_set

    def state_get(self, key: str) -> Mapping[str, Any] | None:
        """A record of the state after the last complete block."""
        return self.machine.state.get(key)


def replay_log(genesis: Genesis, messages: Iterable[LogMessage]) -> Replay:
    """Cut and execute the tx log ``messages`` (in offset order) with the pure core."""
    follower = ChainFollower(genesis)
    replay = Replay(machine=follower.machine)
    for msg in messages:
        executed = follower.feed(msg.offset, msg.timestamp_ms, msg.value)
        if executed is not None:
            replay.blocks.append(executed)
    replay.last_offset = follower.last_offset
    replay.pending_entries = follower.pending_entries
    return replay


def _headers(msg: Message) -> tuple[tuple[str, bytes], ...]:
    """A message's Kafka headers with byte values."""
    out = []
    for header in msg.headers() or []:
        name, value = header[0], header[1]
        if isinstance(name, str):
            out.append((name, value.encode() if isinstance(value, str) else bytes(value or b"")))
    return tuple(out)


def read_partition(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[LogMessage]:
    """Every message of partition 0 of ``topic``, from offset 0 to the current end."""
    consumer = Consumer(consumer_config(bootstrap, f"harness-{uuid.uuid4().hex}"))
    try:
        tp = TopicPartition(topic, 0)
        _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
        if high <= 0:
            return []
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out: list[LogMessage] = []
        deadline = time.monotonic() + timeout
        while (not out or out[-1].offset < high - 1) and time.monotonic() < deadline:
            for msg in consume_ready(consumer, 1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise HarnessError(f"reading {topic}: {err}")
                offset = msg.offset()
                value = msg.value()
                assert offset is not None
                out.append(
                    LogMessage(
                        offset=offset,
                        timestamp_ms=msg.timestamp()[1],
                        key=msg.key(),
                        value=value if value is not None else b"",
                        headers=_headers(msg),
                    )
                )
        if not out or out[-1].offset < high - 1:
            raise HarnessError(f"read {len(out)} messages of {topic}, end is at offset {high}")
        return [m for m in out if m.offset < high]
    finally:
        consumer.close()


def new_key() -> KeyPair:
    """A fresh key pair (seed from the OS)."""
    return KeyPair.from_seed(os.urandom(SEED_BYTES))


def keystore_record(
    institution_id: str, genesis: Genesis, governance: KeyPair, operators: Sequence[KeyPair]
) -> dict[str, Any]:
    """A keystore document in the format ``infra.keystore.create_genesis`` writes."""
    return {
        "institution_id": institution_id,
        "chain_id": genesis.params.chain_id,
        "genesis_hash": genesis.hash().hex(),
        "governance": {**governance.describe(), "seed": governance.seed.hex()},
        "operators": [{**op.describe(), "seed": op.seed.hex()} for op in operators],
    }


def anchor_args(data_id: str, payload: bytes | None = None) -> dict[str, Any]:
    """Arguments of an ``AnchorData`` transaction."""
    digest = hashlib.sha256(payload if payload is not None else data_id.encode()).digest()
    return {"data_id": data_id, "sha256": digest, "metadata": "{}"}


class Consortium:
    """Validator processes of ``inst-1`` .. ``inst-n`` on one chain, and the tools to watch them."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        n: int = 4,
        *,
        prefix: str | None = None,
        chain_id: str = CHAIN_ID,
        operators_per_institution: int = 1,
        **params: int,
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.prefix = prefix if prefix is not None else f"c{uuid.uuid4().hex[:10]}."
        workdir.mkdir(parents=True, exist_ok=True)
        self.net = workdir / "net"
        self.institutions = [f"inst-{i}" for i in range(1, n + 1)]
        self.genesis = create_genesis(
            self.net,
            chain_id,
            self.institutions,
            operators_per_institution=operators_per_institution,
            **params,
        )
        self.genesis_path = self.net / "genesis.avro"
        self.chain_id = chain_id
        #: Extra command-line arguments of some institutions' validators.
        self.extra_args: dict[str, list[str]] = {}
        self._keystores: dict[str, dict[str, Any]] = {}
        for inst in self.institutions:
            self._keystores[inst] = json.loads(self.keystore_path(inst).read_text())
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, list[IO[bytes]]] = {}
        self._operator: dict[str, int] = {}
        self._node_inst: dict[str, str] = {}
        self._node_keystore: dict[str, Path] = {}
        self._starts: dict[str, int] = {}
        self.exit_codes: dict[str, list[int]] = {}
        self._nonces: dict[bytes, int] = {}
        self._nonce_lock = threading.Lock()
        self._producer: Producer | None = None
        self._producer_lock = threading.Lock()
        self.admin = AdminClient(admin_config(bootstrap))
        ensure_topics(self.admin, prefix=self.prefix)

    # -- topics and keys -------------------------------------------------------------------

    def topic(self, suffix: str) -> str:
        """Full topic name (``tx``, ``votes``, ``blocks``, ``receipts``)."""
        return f"{self.prefix}{suffix}"

    def keystore_path(self, inst: str) -> Path:
        """The keystore file of ``inst``."""
        return self.net / "keys" / f"{inst}.json"

    def gov_key(self, inst: str) -> KeyPair:
        """``inst``'s governance key pair."""
        return KeyPair.from_seed(bytes.fromhex(self._keystores[inst]["governance"]["seed"]))

    def operator_key(self, inst: str, index: int = 0) -> KeyPair:
        """``inst``'s operator key pair number ``index``."""
        record = self._keystores[inst]["operators"][index]
        return KeyPair.from_seed(bytes.fromhex(record["seed"]))

    def add_keystore(self, inst: str, governance: KeyPair, operators: Sequence[KeyPair]) -> Path:
        """Write a keystore for an institution admitted after genesis (0600, never replaced)."""
        record = keystore_record(inst, self.genesis, governance, operators)
        write_secret(self.keystore_path(inst), record)
        self._keystores[inst] = record
        if inst not in self.institutions:
            self.institutions.append(inst)
        return self.keystore_path(inst)

    # -- transactions ----------------------------------------------------------------------

    def tx(
        self,
        signer: KeyPair,
        operation: str,
        args: Mapping[str, Any],
        *,
        nonce: int | None = None,
    ) -> bytes:
        """A signed envelope; without ``nonce``, the signer's next tracked nonce (consumed)."""
        if nonce is None:
            with self._nonce_lock:
                nonce = self._nonces.get(signer.key_id, 0)
                self._nonces[signer.key_id] = nonce + 1
        return sign_tx(signer, chain_id=self.chain_id, nonce=nonce, operation=operation, args=args)

    def anchor(self, signer: KeyPair, data_id: str, *, nonce: int | None = None) -> bytes:
        """A signed ``AnchorData`` envelope."""
        return self.tx(signer, "AnchorData", anchor_args(data_id), nonce=nonce)

    def producer(self) -> Producer:
        """A shared idempotent producer (thread-safe in librdkafka)."""
        with self._producer_lock:
            if self._producer is None:
                self._producer = Producer(producer_config(self.bootstrap))
            return self._producer

    def send(self, raws: Iterable[bytes], *, key: bytes = b"harness", flush: bool = True) -> None:
        """Produce raw values to ``<prefix>tx`` in order (and wait for them by default)."""
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        producer = self.producer()
        for raw in raws:
            while True:
                try:
                    producer.produce(self.topic("tx"), key=key, value=raw, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        if flush and producer.flush(30) != 0:
            raise HarnessError("producer did not flush within 30s")
        if errors:
            raise HarnessError(f"delivery failed: {errors[:3]}")

    # -- processes -------------------------------------------------------------------------

    def state_dir(self, inst: str) -> Path:
        """The validator's --state-dir."""
        return self.workdir / "state" / inst

    def log_path(self, inst: str, stream: str) -> Path:
        """Where the validator's stdout/stderr go (appended across restarts)."""
        return self.workdir / "logs" / f"{inst}.{stream}.log"

    def add_operator_keystore(self, node: str, inst: str, operators: Sequence[KeyPair]) -> Path:
        """A keystore of ``inst`` holding only ``operators`` (added after genesis), used by the
        process named ``node`` (0600, never replaced)."""
        path = self.net / "keys" / f"{node}.json"
        write_secret(path, keystore_record(inst, self.genesis, self.gov_key(inst), operators))
        self._node_keystore[node] = path
        return path

    def argv(self, inst: str, operator: int = 0) -> list[str]:
        """The validator command line (``inst`` may be a node name given to :meth:`start`)."""
        name, inst = inst, self._node_inst.get(inst, inst)
        return [
            sys.executable,
            "-m",
            "streams.validator",
            "--genesis",
            str(self.genesis_path),
            "--keystore",
            str(self._node_keystore.get(name, self.keystore_path(inst))),
            "--institution",
            inst,
            "--operator",
            str(operator),
            "--bootstrap",
            self.bootstrap,
            "--prefix",
            self.prefix,
            "--state-dir",
            str(self.state_dir(name)),
            *self.extra_args.get(inst, []),
        ]

    def start_operator(self, inst: str, operator: int) -> str:
        """Start ``inst``'s operator ``operator`` as a process of its own; returns its node
        name (``inst`` for operator 0, else ``inst.opN``) for the other methods."""
        node = inst if operator == 0 else f"{inst}.op{operator}"
        self.start(inst, operator, node=node)
        return node

    def start(self, inst: str, operator: int = 0, *, node: str | None = None) -> None:
        """Start ``inst``'s validator (its state dir is kept across restarts); ``node`` names
        the process when an institution runs several (default ``inst``)."""
        real_inst = inst
        inst = node if node is not None else inst
        self._node_inst[inst] = real_inst
        if self.running(inst):
            raise HarnessError(f"{inst} is already running")
        self._reap(inst)
        self.state_dir(inst).mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        count = self._starts.get(inst, 0) + 1
        self._starts[inst] = count
        out = self.log_path(inst, "stdout").open("ab")
        err = self.log_path(inst, "stderr").open("ab")
        banner = f"\n===== start #{count} of {inst} at {time.time():.3f} =====\n".encode()
        out.write(banner)
        err.write(banner)
        out.flush()
        err.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        self._procs[inst] = subprocess.Popen(
            self.argv(inst, operator),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        self._logs[inst] = [out, err]
        self._operator[inst] = operator

    def start_all(self, insts: Iterable[str] | None = None) -> None:
        """Start several validators."""
        for inst in insts if insts is not None else self.institutions:
            self.start(inst)

    def running(self, inst: str) -> bool:
        """Whether ``inst``'s process is alive."""
        proc = self._procs.get(inst)
        return proc is not None and proc.poll() is None

    def pid(self, inst: str) -> int | None:
        """The pid of ``inst``'s running process."""
        proc = self._procs.get(inst)
        return proc.pid if proc is not None and proc.poll() is None else None

    def _reap(self, inst: str) -> int | None:
        proc = self._procs.pop(inst, None)
        code = None
        if proc is not None:
            code = proc.wait()
            self.exit_codes.setdefault(inst, []).append(code)
        for fh in self._logs.pop(inst, []):
            fh.close()
        return code

    def kill(self, inst: str) -> int | None:
        """SIGKILL ``inst``'s validator; returns its exit code."""
        proc = self._procs.get(inst)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        return self._reap(inst)

    def stop(self, inst: str, timeout: float = 20.0) -> int | None:
        """SIGTERM ``inst``'s validator and wait (SIGKILL after ``timeout``); its exit code."""
        proc = self._procs.get(inst)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(inst)
                raise HarnessError(
                    f"{inst} ignored SIGTERM for {timeout:.0f}s\n{self.tails([inst])}"
                ) from None
        return self._reap(inst)

    def restart(self, inst: str) -> None:
        """Start ``inst`` again (after :meth:`kill` or :meth:`stop`), same state dir."""
        if self.running(inst):
            self.stop(inst)
        self._reap(inst)
        self.start(self._node_inst.get(inst, inst), self._operator.get(inst, 0), node=inst)

    def check_alive(self, insts: Iterable[str] | None = None) -> None:
        """Raise (with log tails) if a validator that should run has exited."""
        names = list(insts) if insts is not None else list(self._procs)
        dead = [
            f"{inst} exited with {self._procs[inst].returncode}"
            for inst in names
            if inst in self._procs and self._procs[inst].poll() is not None
        ]
        dead += [f"{inst} is not running" for inst in names if inst not in self._procs]
        if dead:
            raise HarnessError(f"{'; '.join(dead)}\n{self.tails(names)}")

    def close(self) -> None:
        """Kill every process, close files, print log tails. Safe to call twice."""
        for inst in list(self._procs):
            with contextlib.suppress(Exception):
                self.kill(inst)
        for inst in list(self._logs):
            for fh in self._logs.pop(inst):
                fh.close()
        if self._producer is not None:
            close_producer(self._producer, 5)
            self._producer = None
        print(self.tails(self._starts))

    def tails(self, insts: Iterable[str] | None = None, lines: int = 30) -> str:
        """The end of each validator's stdout and stderr."""
        parts = []
        for inst in insts if insts is not None else self._starts:
            for stream in ("stdout", "stderr"):
                path = self.log_path(inst, stream)
                try:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                except OSError:
                    text = ["(no log)"]
                parts.append(f"----- {inst} {stream} ({path}) -----")
                parts.extend(text)
        statuses = {inst: self.status(inst) for inst in (insts or self._starts)}
        parts.append(f"----- statuses: {json.dumps(statuses, sort_keys=True)}")
        parts.append(f"----- exit codes: {self.exit_codes}")
        return "\n".join(parts)

    # -- observation -----------------------------------------------------------------------

    def status(self, inst: str) -> dict[str, Any] | None:
        """``status.json`` of ``inst``'s validator, or None if absent or being rewritten."""
        path = self.state_dir(inst) / "status.json"
        for _ in range(3):
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                return None
            except (OSError, ValueError):
                time.sleep(0.02)
                continue
            return data if isinstance(data, dict) else None
        return None

    def final_height(self, inst: str) -> int:
        """``final_height`` of ``inst``'s status (-1 if unknown)."""
        status = self.status(inst)
        return int(status["final_height"]) if status else -1

    def fresh_final_height(self, inst: str, max_age_ms: int = 3000) -> int:
        """``final_height`` if the status was written recently by the running process."""
        status = self.status(inst)
        if (
            status is None
            or status.get("pid") != self.pid(inst)
            or time.time() * 1000 - int(status.get("updated_ms", 0)) > max_age_ms
        ):
            return -1
        return int(status["final_height"])

    def wait_until(
        self,
        check: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        alive: Iterable[str] | None = None,
        interval: float = 0.2,
    ) -> None:
        """Poll ``check``; raise with log tails on timeout or if a process in ``alive`` died."""
        names = list(alive) if alive is not None else None
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if names is not None:
                self.check_alive(names)
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"timed out after {timeout:.0f}s waiting for {what}\n{self.tails()}"
                )
            time.sleep(interval)

    def wait_ready(self, insts: Iterable[str], timeout: float = 60.0) -> None:
        """Wait until each process has written a status with its own pid."""
        names = list(insts)

        def ready() -> bool:
            return all(
                (s := self.status(i)) is not None and s.get("pid") == self.pid(i) for i in names
            )

        self.wait_until(ready, timeout=timeout, what=f"status of {names}", alive=names)

    def wait_final(
        self, height: int, insts: Iterable[str] | None = None, timeout: float = 60.0
    ) -> None:
        """Wait until every validator in ``insts`` (default: the running ones) reports
        ``final_height >= height`` in a status written by its current process."""
        names = list(insts) if insts is not None else [i for i in self._procs if self.running(i)]
        self.wait_until(
            lambda: all(self.fresh_final_height(i) >= height for i in names),
            timeout=timeout,
            what=f"final height {height} on {names}",
            alive=names,
        )

    def max_final(self, insts: Iterable[str]) -> int:
        """The highest ``final_height`` among ``insts``."""
        return max(self.final_height(i) for i in insts)

    def read_topic(self, suffix: str) -> list[LogMessage]:
        """Every message of ``<prefix><suffix>`` from offset 0."""
        return read_partition(self.bootstrap, self.topic(suffix))

    def read_blocks(self) -> list[tuple[bytes | None, bytes, Decoded]]:
        """Every ``FinalizedBlock`` message: (key, raw bytes, decoded) in log order."""
        return [(m.key, m.value, decode_finalized(m.value)) for m in self.read_topic("blocks")]

    def read_receipts(self) -> list[tuple[bytes | None, bytes, dict[str, Any]]]:
        """Every ``Receipt`` message: (key, raw bytes, record) in log order."""
        return [
            (m.key, m.value, decode(m.value, "Receipt")[1]) for m in self.read_topic("receipts")
        ]

    def blocks_by_height(self) -> dict[int, list[bytes]]:
        """Raw ``FinalizedBlock`` messages grouped by header height."""
        out: dict[int, list[bytes]] = {}
        for _, raw, (header, _, _) in self.read_blocks():
            out.setdefault(header.height, []).append(raw)
        return out

    def final_entries(self) -> dict[bytes, list[tuple[int, int]]]:
        """tx id -> [(height, result code)] over the first FinalizedBlock of every height."""
        out: dict[bytes, list[tuple[int, int]]] = {}
        seen: set[int] = set()
        for _, _, (header, _, results) in self.read_blocks():
            if header.height in seen:
                continue
            seen.add(header.height)
            for r in results:
                out.setdefault(r.tx_id, []).append((header.height, int(r.code)))
        return out

    def replay(self) -> Replay:
        """The oracle: ``<prefix>tx`` from offset 0 through the pure core, in this process."""
        return replay_log(self.genesis, self.read_topic("tx"))

    def __enter__(self) -> Consortium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Load:
    """A background thread signing ``AnchorData`` transactions at a steady rate."""

    def __init__(
        self, consortium: Consortium, signer: KeyPair, *, rate: float = 40.0, tag: str = "load"
    ) -> None:
        self.consortium = consortium
        self.signer = signer
        self.interval = 1.0 / rate
        self.tag = tag
        self.sent: list[bytes] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{tag}", daemon=True)

    def start(self) -> Load:
        """Start sending."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            i = 0
            while not self._stop.is_set():
                raw = self.consortium.anchor(self.signer, f"{self.tag}-{i}")
                self.consortium.send([raw], key=self.signer.key_id, flush=False)
                self.sent.append(raw)
                i += 1
                self._stop.wait(self.interval)
            if self.consortium.producer().flush(30) != 0:
                raise HarnessError("load producer did not flush")
        except BaseException as exc:
            self.error = exc

    def stop(self) -> list[bytes]:
        """Stop, flush, and return every envelope sent; re-raise the thread's error.

        Idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(60)
        if self.error is not None:
            raise self.error
        return self.sent

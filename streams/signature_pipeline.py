"""Transaction signatures verified in worker processes ahead of a serial replay.

Used by the audit (``pantheon audit --workers N``) and by a validator with spare cores
(``pantheon validator --verify-workers N``, D18); the text below speaks of the audit.

Theory of operation
-------------------
* The Ed25519 verify is most of the cost of executing a transaction, and the replay is one
  ordered, serial computation. :class:`SignaturePipeline` takes the ``tx`` messages as they
  are read, in chunks (small at first so the replay starts at once, then ``chunk`` messages),
  and sends each chunk's raw bytes to a :class:`~concurrent.futures.ProcessPoolExecutor`.
  A worker runs :func:`ledger.tx.signature_verifies` on every message (slices, no decoding;
  the chunk as one batch, :func:`ledger.tx.signatures_verify`) and returns a bitmap: bit
  ``i`` set iff message ``i``'s signature verified. Nothing per transaction is pickled back.
* Chunks are fed to the sink (:meth:`ledger.audit.ChainAudit.feed_tx`) strictly in log
  order, each message with its bit as ``signature_verified``. While a chunk is executed the
  workers verify the next ones; at most ``depth`` chunks are in flight (memory stays bounded),
  and the reader waits for the oldest only when that many are.
* A cleared bit, a failed worker or a broken pool only means "not vouched for": the core then
  verifies that envelope itself, so every rejection keeps its exact code and a worker can
  never make the audit accept a bad signature that the core would refuse (a worker can only
  vouch for what it verified, and the bit is trusted for those bytes alone).
* Workers start through a fork server (never ``fork`` from a process running librdkafka's
  threads) that preloads this module; as with any ``multiprocessing`` start, each also
  imports the program's main module, so starting takes about a second: the audit starts
  them first and waits for them (:meth:`SignaturePipeline.wait_ready`) before its replay.
* Workers run at a lower priority (``nice`` +5) than the replay: when the cores are short,
  the serial replay is the one to keep busy (measured with ``bench/audit.py``: better than
  equal priority on a shared two-core machine). :attr:`SignaturePipeline.waited` says how
  long the replay waited for them (the audit reports it as ``signature_wait_seconds``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path

from ledger.tx import signatures_verify

log = logging.getLogger("pantheon.signatures")

WORKER_NICENESS = 5
FIRST_CHUNK = 128  # the first chunk is small so the replay starts at once; then doubling
CHUNK = 2048
OWNER_CHECK_SECONDS = 0.5
Sink = Callable[[int, int, bytes, bool], None]  # offset, timestamp, raw, signature verified


def default_workers() -> int:
    """One worker per core."""
    return os.cpu_count() or 1


def verify_chunk(raws: list[bytes]) -> bytes:
    """A bitmap of ``raws`` (bit ``i % 8`` of byte ``i // 8``): set iff the signature of
    ``raws[i]`` verifies (:func:`ledger.tx.signature_verifies`; the chunk is checked as one
    batch, :func:`ledger.tx.signatures_verify`). Runs in a worker."""
    bits = bytearray((len(raws) + 7) // 8)
    for i, ok in enumerate(signatures_verify(raws)):
        if ok:
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a process from a later one with its pid)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _watch_owner(owner: int, started: str | None) -> None:
    while _start_time(owner) == started:
        time.sleep(OWNER_CHECK_SECONDS)
    os._exit(0)  # the owner is gone (SIGKILL included): nothing left to verify for


def _init_worker(niceness: int, owner: int, owner_started: str | None) -> None:
    """Lower the worker's priority, and end it when the process that owns the pool dies.

    A worker is a child of the fork server and holds both ends of its own call queue, so
    it never sees its owner go: without this, a SIGKILLed validator or audit left its fork
    server and workers running for ever (found by the one-crash consensus test).
    """
    if niceness > 0:
        with contextlib.suppress(OSError):  # not permitted: run at the same priority
            os.nice(niceness)
    if owner_started is not None:
        threading.Thread(
            target=_watch_owner, args=(owner, owner_started), name="owner-watch", daemon=True
        ).start()


def worker_pool(workers: int, *, niceness: int = 0) -> ProcessPoolExecutor:
    """A process pool started through a fork server (never a ``fork`` of a process running
    librdkafka's threads), whose workers run at ``niceness`` and exit when this process dies
    (:func:`_init_worker`). The batcher's process verifier uses it too."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(
        workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(niceness, os.getpid(), _start_time(os.getpid())),
    )


def _ready() -> int:
    return os.getpid()


class SignaturePipeline:
    """Feeds ``tx`` messages to ``sink`` in order, signatures verified ahead by ``workers``
    processes (module docstring). Use :meth:`add` per message, :meth:`flush` at the end of
    the log, :meth:`close` always."""

    def __init__(
        self,
        sink: Sink,
        workers: int,
        *,
        chunk: int = CHUNK,
        depth: int | None = None,
        niceness: int = WORKER_NICENESS,
    ) -> None:
        if workers < 1:
            raise ValueError("a signature pipeline needs at least one worker")
        self.sink = sink
        self.workers = workers
        self.chunk = chunk
        self.depth = depth or 2 * workers + 2
        self.vouched = 0  # messages fed with a verified signature
        self.unverified = 0  # messages fed without (bad signature, not an envelope, worker lost)
        self.waited = 0.0  # seconds the replay waited for a worker's result
        self._pool: ProcessPoolExecutor | None = worker_pool(workers, niceness=niceness)
        self._warmup = [self._pool.submit(_ready) for _ in range(workers)]
        self._next_size = min(FIRST_CHUNK, chunk)
        self._offsets: list[int] = []
        self._stamps: list[int] = []
        self._raws: list[bytes] = []
        self._inflight: deque[tuple[list[int], list[int], list[bytes], Future[bytes] | None]]
        self._inflight = deque()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every worker has started (so start-up is not counted in the replay)."""
        for future in self._warmup:
            try:
                future.result(timeout)
            except Exception as exc:  # the pipeline degrades, see _result
                log.warning("signature worker did not start", extra={"error": str(exc)})
                return

    def add(self, offset: int, timestamp_ms: int, raw: bytes) -> None:
        """The next ``tx`` message (offset order)."""
        self._offsets.append(offset)
        self._stamps.append(timestamp_ms)
        self._raws.append(raw)
        if len(self._raws) >= self._next_size:
            self._submit()
            self._next_size = min(2 * self._next_size, self.chunk)
            self._drain(block=len(self._inflight) >= self.depth)

    def flush(self) -> None:
        """Feed everything added so far (waits for the workers)."""
        if self._raws:
            self._submit()
        self._drain(block=True, everything=True)

    @property
    def pending(self) -> int:
        """Messages added and not fed to the sink yet."""
        return len(self._raws) + sum(len(chunk[2]) for chunk in self._inflight)

    def poll(self, wait: float = 0.0) -> None:
        """Send what is buffered to the workers and feed every chunk already verified, in
        order; with ``wait``, first wait up to that many seconds for the oldest chunk (a live
        reader calls this after each fetch instead of waiting for a full chunk)."""
        if self._raws:
            self._submit()
        if wait > 0 and self._inflight and self._inflight[0][3] is not None:
            futures_wait([self._inflight[0][3]], timeout=wait)
        self._drain(block=len(self._inflight) > self.depth)

    def discard(self) -> None:
        """Drop what was added and not fed yet (the reader moved in the log; in-flight
        chunks are left to finish and their results ignored)."""
        self._offsets, self._stamps, self._raws = [], [], []
        self._inflight.clear()

    def close(self) -> None:
        """Stop the workers (messages not flushed are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._inflight.clear()

    def __enter__(self) -> SignaturePipeline:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _submit(self) -> None:
        raws = self._raws
        future: Future[bytes] | None = None
        if self._pool is not None:
            try:
                future = self._pool.submit(verify_chunk, raws)
            except RuntimeError as exc:  # a broken pool: the core verifies everything
                log.warning("signature workers unavailable", extra={"error": str(exc)})
                future = None
        self._inflight.append((self._offsets, self._stamps, raws, future))
        self._offsets, self._stamps, self._raws = [], [], []

    def _drain(self, *, block: bool, everything: bool = False) -> None:
        """Feed finished chunks, oldest first; with ``block`` wait for the oldest one (or,
        with ``everything``, for all)."""
        while self._inflight:
            future = self._inflight[0][3]
            if not (block or future is None or future.done()):
                return
            offsets, stamps, raws, _ = self._inflight.popleft()
            bits = self._result(future, len(raws))
            sink = self.sink
            vouched = 0
            for i, raw in enumerate(raws):
                ok = bool(bits[i >> 3] >> (i & 7) & 1)
                vouched += ok
                sink(offsets[i], stamps[i], raw, ok)
            self.vouched += vouched
            self.unverified += len(raws) - vouched
            block = everything

    def _result(self, future: Future[bytes] | None, count: int) -> bytes:
        none = bytes((count + 7) // 8)
        if future is None:
            return none
        began = time.monotonic()
        try:
            bits = future.result()
        except Exception as exc:  # a lost worker: the core verifies
            log.warning("signature worker failed", extra={"error": str(exc)})
            return none
        finally:
            self.waited += time.monotonic() - began
        return bits if len(bits) == len(none) else none

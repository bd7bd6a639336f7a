"""Several gateway worker processes serving one port.

Theory of operation
-------------------
One gateway process runs its Python on one core at a time (the GIL), and most of a request's
CPU is the HTTP stack (D35, D46). ``pantheon gateway --workers N`` runs N copies of the whole
gateway (app, connection pool, IAM service, caches) as worker processes on one port:

* The **parent** reserves the port (:func:`reserve`), then forks the workers (before it has
  created a thread, a pool or an event loop); each worker listens on the port with a socket
  of its own (:func:`listener`, ``SO_REUSEPORT``). The parent does nothing else: it
  forwards ``SIGTERM``/``SIGINT`` to every worker, waits for them (``SIGKILL`` after
  ``stop_timeout_s``), and exits. Its pid is the one in the pid file, so ``pantheon
  stop/restart gateway`` stop all workers.
* **Worker 0 starts alone**: the others are forked only once it has called ``ready`` (after
  its first-start initialization: IAM migrations, the key-encryption key, the first token
  signing key), so two workers never race to create them.
* **No orphans**: each worker asks the kernel for ``SIGTERM`` when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``), so ``SIGKILL`` of the parent stops the workers and frees the
  port; a worker whose parent is already gone exits at once.
* **A worker that exits on its own stops the gateway** (the others get ``SIGTERM``, the parent
  exits 1): a half-alive gateway is not reported healthy; the supervisor of the stack restarts
  it as it would a single process.
* **Metrics**: the workers count into ``prometheus_client``'s multiprocess files in a private
  directory (``PROMETHEUS_MULTIPROC_DIR``); ``/metrics`` of any worker sums them
  (:meth:`gateway.metrics.GatewayMetrics.render`). The directory is removed on exit, and a
  dead worker's live gauges are dropped.
* What stays per process (decisions D46): the response and document caches, the token cache,
  the head/body deadlines (per connection), the height watcher. Login throttling is shared
  through PostgreSQL (:mod:`gateway.iam.throttle_store`); keys are in PostgreSQL already.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger("pantheon.gateway")

WORKERS_ENV = "PANTHEON_GATEWAY_WORKERS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PR_SET_PDEATHSIG = 1
EXIT_WORKER_FAILED = 1

#: ``run(index, ready)`` serves in worker ``index`` until it is told to stop and returns an
#: exit code; it calls ``ready()`` once its first-start initialization is done.
Run = Callable[[int, Callable[[], None]], int]


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def reserve(host: str, port: int) -> socket.socket:
    """The parent's hold on the port: bound with ``SO_REUSEPORT`` but not listening, so it
    gets no connections, a port in use fails here (before any worker starts), and no other
    user's program can take the port while the gateway runs."""
    return _socket(host, port)


def listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A worker's own listening socket on the shared port (``SO_REUSEPORT``). The kernel
    spreads new connections over the workers' sockets by a hash of the client address; one
    socket accepted by all workers instead left 30 of the bench's 32 connections on one
    worker (whichever wakes first drains the whole queue)."""
    sock = _socket(host, port)
    sock.listen(backlog)
    return sock


def _die_with_parent(parent: int) -> None:
    """Ask for SIGTERM when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _enable_multiprocess_metrics() -> None:
    """Count into the multiprocess files from now on (the env var is read at import)."""
    from prometheus_client import values  # noqa: PLC0415

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class Supervisor:
    """Forks ``workers`` processes running ``run`` and stops them together."""

    def __init__(self, workers: int, run: Run, *, stop_timeout_s: float = 25.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self.run = run
        self.stop_timeout_s = stop_timeout_s
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.stopping = False

    def _fork(self, index: int) -> bool:
        """Fork worker ``index``; False if worker 0 died before it was ready."""
        parent = os.getpid()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            code = EXIT_WORKER_FAILED
            try:
                os.close(ready_r)
                _die_with_parent(parent)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                _enable_multiprocess_metrics()

                def ready() -> None:
                    with contextlib.suppress(OSError):
                        os.write(ready_w, b"1")
                        os.close(ready_w)

                code = self.run(index, ready)
            except BaseException:  # the worker reports and exits
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(ready_w)
        self.pids[pid] = index
        ok = True
        if index == 0:  # the others wait for its first-start initialization
            with contextlib.suppress(InterruptedError):
                ok = os.read(ready_r, 1) == b"1"  # b"": it exited first
        os.close(ready_r)
        return ok or self.stopping

    def _signal_all(self, sig: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def serve(self) -> int:
        """Fork the workers, wait for them; the exit code (0: stopped by a signal)."""
        metrics_dir = Path(tempfile.mkdtemp(prefix="pantheon-gateway-metrics-"))
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        code = 0
        try:
            for index in range(self.workers):
                if self.stopping:
                    break
                if not self._fork(index):  # worker 0 failed at start: its code, no others
                    self.stopping = True
                    pid, status = os.waitpid(next(iter(self.pids)), 0)
                    self.pids.pop(pid, None)
                    code = os.waitstatus_to_exitcode(status) or EXIT_WORKER_FAILED
            while self.pids:
                if self.stopping:
                    self._stop_with_deadline()
                elif self._reap(block=False):
                    code = EXIT_WORKER_FAILED  # a worker exited on its own
                    self._on_signal(signal.SIGTERM, None)
                else:
                    time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._signal_all(signal.SIGKILL)
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)
        return code

    def _reap(self, *, block: bool) -> bool:
        """Wait for (or poll) one worker's exit; True if one exited."""
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.pids.clear()
            return True
        if pid == 0 or pid not in self.pids:
            return False
        index = self.pids.pop(pid)
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if not self.stopping:
            log.error(
                "gateway worker exited; stopping the gateway",
                extra={"worker": index, "status": os.waitstatus_to_exitcode(status)},
            )
        return True

    def _stop_with_deadline(self) -> None:
        deadline = time.monotonic() + self.stop_timeout_s
        while self.pids and time.monotonic() < deadline:
            if not self._reap(block=False):
                time.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        while self.pids:
            self._reap(block=True)


def default_workers() -> int:
    """``PANTHEON_GATEWAY_WORKERS`` if set, else 1 (decisions D46)."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else 1

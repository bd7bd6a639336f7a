"""What one ``pantheon up`` started, so that a failed or interrupted one stops exactly that.

``up`` is idempotent: it reuses every process an earlier ``up`` left running and starts the
rest. When it fails half-way (a port taken, a process that exits while starting, Ctrl-C or
SIGTERM), :class:`Rollback` stops the processes that run now and did not run (under the same
pid) when the call began, and removes their pid files; what ran before is left alone (D60).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infra import procs
from infra.errors import StackError
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from infra.prometheus_server import Prometheus
from infra.settings import Settings


class UpFailed(StackError):
    """``up`` failed; what it had started in this call is stopped again."""

    def __init__(self, cause: BaseException, stopped: list[str]) -> None:
        self.cause = cause
        self.stopped = stopped
        super().__init__(f"{_first_line(cause)}; {self.undone}")

    @property
    def undone(self) -> str:
        """What was done about the processes this call started, in a few words."""
        if not self.stopped:
            return "this `up` had started nothing"
        return f"stopped what this `up` had started ({summary(self.stopped)})"


class UpInterrupted(KeyboardInterrupt):
    """``up`` was interrupted (Ctrl-C, SIGTERM); what it had started is stopped again."""

    def __init__(self, stopped: list[str]) -> None:
        super().__init__()
        self.stopped = stopped


def summary(names: list[str]) -> str:
    """``kafka, postgres, 4 validators`` for the names :meth:`Rollback.undo` returns."""
    counts = Counter(name.split()[0] for name in names)
    return ", ".join(kind if n == 1 else f"{n} {kind}s" for kind, n in sorted(counts.items()))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Within: Ctrl-C and SIGTERM are ignored (in the main thread, where handlers live), so
    a second one does not cut the stopping short; SIGKILL still ends it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Rollback:
    """The processes of a stack's state directory that run when it is made, to compare with
    later: :meth:`undo` stops every one that runs then and did not run now."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaCluster(settings)
        self.postgres = Postgres(settings)
        self.prometheus = Prometheus(settings)
        self.before = self.running()

    def _pid_files(self) -> dict[str, Path]:
        """Every pid file of the stack, by the name :meth:`undo` reports it as."""
        state = self.settings.state_dir
        files = {f"kafka node {p.parent.name[5:]}": p for p in state.glob("kafka/node-*/pid")}
        files["prometheus"] = self.prometheus.pid_file
        for pid_file in sorted(state.glob("consortium/*/*/pid")):
            kind = pid_file.parent.parent.name.removesuffix("s")  # validators -> validator
            files[f"{kind} {pid_file.parent.name}"] = pid_file
        return files

    def running(self) -> dict[str, int]:
        """Name -> pid of every process of the stack that runs now."""
        alive = {
            name: pid
            for name, pid_file in self._pid_files().items()
            if (pid := procs.read_pid(pid_file)) is not None
        }
        postgres = self.postgres.pid()
        if postgres is not None:
            alive["postgres"] = postgres
        return alive

    def undo(self) -> list[str]:
        """Stop what started since this object was made (the consortium's processes, then
        the servers side by side); the names of what was stopped."""
        started = {
            name: pid for name, pid in self.running().items() if self.before.get(name) != pid
        }
        files = self._pid_files()
        servers = ("kafka", "prometheus", "postgres")
        members = [pid for name, pid in started.items() if not name.startswith(servers)]
        procs.stop_pids(members, timeout=20)
        own = [pid for name, pid in started.items() if name.startswith(("kafka", "prometheus"))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            stops = [pool.submit(procs.stop_pids, own, timeout=30)]
            if "postgres" in started:
                stops.append(pool.submit(self.postgres.stop))
        for done in stops:
            done.result()
        for name, pid in started.items():
            pid_file = files.get(name)
            if pid_file is not None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    if int(pid_file.read_text().split()[0]) == pid:
                        pid_file.unlink()
        return sorted(started)

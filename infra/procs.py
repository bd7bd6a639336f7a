"""Background processes of the local stack: start detached, track by pid file, stop.

A service's pid file lives in its own state directory; a pid file whose process is gone
(or belongs to another program after pid reuse) counts as "not running". Stopping sends
SIGTERM, waits, then SIGKILL, so ``stop`` always ends with the process gone.

A command line is readable by every local user (``ps``, ``/proc/<pid>/cmdline``), so
:func:`spawn` refuses one that carries a password: secrets go to a child through its
environment (``PGPASSWORD``) or 0600 files (key stores, master keys), never through argv.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


# Ports for our servers come from below the kernel's ephemeral range (32768-60999 on Linux),
# where outgoing connections (Kafka clients open many) take theirs: a port found free there
# could be taken a moment later by an unrelated connect().
_PORT_RANGE = (20000, 32000)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port, below the ephemeral range (for servers and tests' stacks)."""
    return free_port_block(1, host)


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports."""
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(_PORT_RANGE[0], _PORT_RANGE[1] - count)
        if all(_bindable(host, base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def descendants(*pids: int) -> list[int]:
    """Every live process below ``pids`` (children, their children, ...), from ``/proc``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = set(pids)
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


_SECRET_ARG = re.compile(r"password\s*=|pgpassword|://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE)


class SecretInArgv(ValueError):
    """A command line would carry a password (visible to every local user)."""


def check_argv(argv: Sequence[str]) -> None:
    """Raise :class:`SecretInArgv` if an argument carries a password (``password=...``, a
    ``PGPASSWORD`` assignment, or ``scheme://user:secret@host``)."""
    for arg in argv:
        if _SECRET_ARG.search(arg):
            raise SecretInArgv(
                f"refusing to start {Path(argv[0]).name}: an argument carries a password; "
                "pass it in the environment (PGPASSWORD) or a 0600 file instead"
            )


_CALLED_OFF = threading.Event()


class Cancelled(RuntimeError):
    """Starting or waiting was called off: the command that started it was interrupted, or
    a server started beside it failed (D60)."""


def call_off_starts() -> None:
    """From now on :func:`spawn` and :func:`wait_until` raise :class:`Cancelled` (in every
    thread), so a start in flight ends at its next step and starts nothing more."""
    _CALLED_OFF.set()


def allow_starts() -> None:
    """Undo :func:`call_off_starts` (at the beginning of each ``up``)."""
    _CALLED_OFF.clear()


def _check_not_called_off(what: str) -> None:
    if _CALLED_OFF.is_set():
        raise Cancelled(f"called off before {what}")


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    pid_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` in its own session, output appended to ``log_file``; return its pid.

    ``argv`` must not carry a password (:func:`check_argv`)."""
    check_argv(argv)
    _check_not_called_off(f"starting {Path(argv[0]).name}")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    _CHILDREN[proc.pid] = proc
    return proc.pid


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Servers this process started: kept so they can be reaped (no zombies, no warnings)."""


def reap(pid: int) -> None:
    """Collect an exited child so it does not linger as a zombie (no-op for non-children)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_pid(pid: int, *, timeout: float = 30.0, sig: int = signal.SIGTERM) -> None:
    """Signal ``pid`` (SIGTERM by default), wait up to ``timeout``, then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        reap(pid)
        if not pid_alive(pid):
            return
        time.sleep(0.05)


def stop_pids(pids: Sequence[int], *, timeout: float = 30.0) -> None:
    """SIGTERM every pid at once, then wait for each (up to ``timeout`` each) and SIGKILL one
    that is still there: shutdowns overlap instead of queueing one behind the other."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in pids:
        stop_pid(pid, timeout=timeout)


def stop_all(procs: Sequence[subprocess.Popen[bytes]], *, timeout: float = 20.0) -> None:
    """SIGTERM every child of ``procs`` at once, then wait for each (up to ``timeout``
    each) and SIGKILL one that is still there."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(
    check: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str
) -> None:
    """Poll ``check`` until true; raise TimeoutError naming ``what`` after ``timeout``, or
    :class:`Cancelled` once starts are called off."""
    deadline = time.monotonic() + timeout
    while True:
        _check_not_called_off(f"{what} was ready")
        if check():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])

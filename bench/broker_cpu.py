"""Where a Kafka broker's CPU goes, by thread group (``bench.consensus --breakdown``, D64).

A broker's process CPU mixes the work the clients cause (request handler and network
threads) with the JVM's own: the JIT compilers, which keep compiling the broker's hot paths
for minutes after it starts (a bench's broker is fresh), and the garbage collector. Each
thread's CPU is read from ``/proc/<pid>/task/<tid>/stat``; its full Java name from
``jcmd <pid> Thread.print`` (``nid`` is the thread id), since Linux keeps only 15 characters
of a thread's name and the handler and network threads of Kafka both start with
``data-plane-kafk``. Without ``jcmd`` (or for a process that is no JVM) the short names are
used (handlers and network
threads then fall under "other").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

GROUPS = ("request handlers", "network", "JIT compiler", "GC", "other")
"""The thread groups, in the order they are printed."""

_NID = re.compile(r'^"(?P<name>[^"]+)".*\bnid=(?P<nid>0x[0-9a-fA-F]+|\d+)')


def thread_names(pid: int) -> dict[int, str]:
    """The full Java names of the JVM ``pid``'s threads by thread id (empty without jcmd)."""
    jcmd = shutil.which("jcmd")
    try:  # jcmd attaches by signalling its target: never to anything but a JVM
        is_java = Path(f"/proc/{pid}/comm").read_text().strip() == "java"
    except OSError:
        is_java = False
    if jcmd is None or not is_java:
        return {}
    try:
        out = subprocess.run(
            [jcmd, str(pid), "Thread.print"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_thread_dump(out)


def parse_thread_dump(text: str) -> dict[int, str]:
    """Thread id -> name from the text of ``jcmd <pid> Thread.print``."""
    names: dict[int, str] = {}
    for line in text.splitlines():
        found = _NID.match(line)
        if found is not None:
            names[int(found["nid"], 0)] = found["name"]
    return names


def group_of(name: str) -> str:
    """The group (one of :data:`GROUPS`) of a broker thread named ``name``."""
    if "request-handler" in name:
        return "request handlers"
    if "network-thread" in name or "socket-acceptor" in name:
        return "network"
    if "CompilerThre" in name:  # "C2 CompilerThread0", or its 15-character Linux name
        return "JIT compiler"
    if name.startswith(("GC Thread", "G1 ", "VM Thread")):  # VM Thread: safepoints
        return "GC"
    return "other"


def thread_cpu(pid: int) -> dict[int, tuple[float, str]]:
    """CPU seconds (user + system) and Linux name of each live thread of ``pid``."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, tuple[float, str]] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            comm = (task / "comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        found[int(task.name)] = ((int(fields[11]) + int(fields[12])) / tick, comm)
    return found


Sample = dict[tuple[int, int], tuple[float, str]]
"""(broker pid, thread id) -> (CPU seconds so far, group)."""


class BrokerThreads:
    """CPU of brokers' thread groups between two :meth:`sample` calls."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self.names = {pid: thread_names(pid) for pid in self.pids}

    def sample(self) -> Sample:
        """Every live broker thread's CPU so far, with its group."""
        return {
            (pid, tid): (cpu, group_of(self.names[pid].get(tid, comm)))
            for pid in self.pids
            for tid, (cpu, comm) in thread_cpu(pid).items()
        }


def difference(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds per group (:data:`GROUPS`) between two samples: what each thread alive at
    the second used since the first (a thread started meanwhile: all of its use)."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for key, (cpu, group) in after.items():
        totals[group] += cpu - before.get(key, (0.0, group))[0]
    return totals

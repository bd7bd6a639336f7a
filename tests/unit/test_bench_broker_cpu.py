"""The broker's CPU by thread group, as ``bench.consensus --breakdown`` prints it (D64)."""

from __future__ import annotations

import os
import time

from bench.broker_cpu import GROUPS, BrokerThreads, difference, group_of, parse_thread_dump

DUMP = """2026-12-06 21:40:01
Full thread dump OpenJDK 64-Bit Server VM (17.0.15+6-Debian-1deb12u1 mixed mode, sharing):

"main" #1 prio=5 os_prio=0 cpu=1356.90ms elapsed=536.84s tid=0x00007f nid=0x1989 waiting
"data-plane-kafka-request-handler-0" #61 daemon prio=5 os_prio=0 cpu=9.1ms nid=0x19c0 waiting
"data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-2" #55 nid=6601 runnable
"C2 CompilerThread0" #14 daemon prio=9 os_prio=0 cpu=2.0ms nid=0x199a waiting on condition
"GC Thread#1" os_prio=0 cpu=18.07ms elapsed=535.9s tid=0x00007fe9 nid=0x19a8 runnable
"""


def test_a_thread_dump_gives_each_thread_id_its_full_name() -> None:
    names = parse_thread_dump(DUMP)
    assert names == {
        0x1989: "main",
        0x19C0: "data-plane-kafka-request-handler-0",
        6601: "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-2",
        0x199A: "C2 CompilerThread0",
        0x19A8: "GC Thread#1",
    }


def test_threads_are_grouped_by_what_they_do() -> None:
    groups = {name: group_of(name) for name in parse_thread_dump(DUMP).values()}
    assert groups == {
        "main": "other",
        "data-plane-kafka-request-handler-0": "request handlers",
        "data-plane-kafka-network-thread-1-ListenerName(PLAINTEXT)-PLAINTEXT-2": "network",
        "C2 CompilerThread0": "JIT compiler",
        "GC Thread#1": "GC",
    }
    # Linux's 15-character names, when jcmd is missing: the compiler is still told apart
    assert group_of("C1 CompilerThre") == "JIT compiler"
    assert group_of("data-plane-kafk") == "other"


def test_the_difference_counts_each_live_thread_from_its_first_sample() -> None:
    before = {(1, 10): (5.0, "JIT compiler"), (1, 11): (2.0, "network"), (1, 12): (9.0, "GC")}
    after = {  # thread 12 ended: not subtracted from anything; thread 13 is new
        (1, 10): (5.5, "JIT compiler"),
        (1, 11): (2.25, "network"),
        (1, 13): (0.5, "request handlers"),
    }
    assert difference(before, after) == {
        "request handlers": 0.5,
        "network": 0.25,
        "JIT compiler": 0.5,
        "GC": 0.0,
        "other": 0.0,
    }
    assert tuple(difference({}, {})) == GROUPS


def test_a_live_process_is_sampled_per_thread() -> None:
    meter = BrokerThreads([os.getpid()])  # not a JVM: no Java names, Linux names instead
    sample = meter.sample()
    assert (os.getpid(), os.getpid()) in sample  # the main thread's id is the pid
    assert all(cpu >= 0.0 and group in GROUPS for cpu, group in sample.values())
    began = time.process_time()
    while time.process_time() - began < 0.05:  # more than a clock tick of CPU in this thread
        sum(range(10_000))
    spent = difference(sample, meter.sample())
    assert spent["other"] > 0.0
    assert spent["JIT compiler"] == spent["network"] == 0.0

"""``bench.iam``'s events pass every reader's rules, authorization included (D21, D27)."""

from __future__ import annotations

from bench.iam import INST, events
from ledger.iam_events import IamGate, KeyHistory, Opened
from ledger.keys import KeyPair


def test_the_benchmark_signs_only_events_its_actor_may_write() -> None:
    key = KeyPair.from_seed(bytes(range(32)))
    history = KeyHistory.from_rows([(key.key_id, 0, INST, "SERVICE", True, key.public_key)])
    gate = IamGate(INST, history.at)
    verdicts = [gate.admit(raw) for raw in events(key, 1, 12)]
    assert all(isinstance(v, Opened) for v in verdicts), verdicts
    assert gate.authz.owner == "u-0"
    assert len(gate.authz.groups) == 5

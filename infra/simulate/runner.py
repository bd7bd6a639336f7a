"""The I/O shell of ``pantheon simulate``: sends the planned workload, follows receipts and
resyncs nonces (module docstring of :mod:`infra.simulate`)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from infra.simulate.planner import (
    DEFAULT_WEIGHTS,
    GOVERNANCE,
    SERVICE,
    PlannedTx,
    Planner,
    SenderId,
)
from infra.simulate.stats import Stats
from ledger.genesis import Genesis
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.outcomes import SetSource
from ledger.results import ResultCode
from streams.sdk import LedgerClient, ReceiptWatcher, SubmitError

NonceLookup = Callable[[str, bytes], int | None]
"""(institution, key id) -> the chain's next nonce of that key, or None if unknown now."""


@dataclass(slots=True)
class _Flight:
    planned: PlannedTx
    nonce: int
    sent_at: float


@dataclass(slots=True)
class _Sender:
    institution: str
    role: str
    key: KeyPair
    client: LedgerClient
    inflight: dict[bytes, _Flight] = field(default_factory=dict)
    paused_at: float | None = None
    base_nonce: int = 0
    best_ok: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SimConfig:
    """What :class:`Simulator` needs; :func:`main` builds it from the local consortium."""

    bootstrap: str
    prefix: str
    chain_id: str
    genesis: Genesis  # the trust anchor of every outcome (decisions D22)
    governance_keys: Mapping[str, KeyPair]
    service_keys: Mapping[str, KeyPair]
    members: int
    threshold_num: int = 2
    threshold_den: int = 3
    rate: float = 20.0
    seconds: float | None = None
    drain: float = 15.0
    receipt_timeout: float = 60.0
    seed: int | None = None
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    validator_sets: SetSource | None = None  # candidates after membership changes


class Simulator:
    """Sends the planned workload, follows receipts, resyncs nonces; see the module doc."""

    def __init__(
        self,
        config: SimConfig,
        nonce_lookup: NonceLookup,
        *,
        progress: TextIO | None = None,
    ) -> None:
        self.config = config
        self.nonce_lookup = nonce_lookup
        self.progress = progress
        self.stop = threading.Event()
        self.stats = Stats()
        rng = random.Random(config.seed)
        self.planner = Planner(
            {i: k.key_id for i, k in config.service_keys.items()},
            rng=rng,
            run_id=rng.randbytes(4).hex(),
            members=config.members,
            chain_id=config.chain_id,
            threshold_num=config.threshold_num,
            threshold_den=config.threshold_den,
            weights=config.weights,
        )
        self.senders: dict[SenderId, _Sender] = {}
        self.watcher: ReceiptWatcher | None = None

    # lifecycle

    def run(self) -> dict[str, Any]:
        """Run until ``seconds`` elapse or :attr:`stop` is set; return the summary."""
        cfg = self.config
        self.watcher = ReceiptWatcher(
            cfg.bootstrap, genesis=cfg.genesis, prefix=cfg.prefix, validator_sets=cfg.validator_sets
        )
        try:
            for inst in sorted(cfg.service_keys):
                for role, key in (
                    (GOVERNANCE, cfg.governance_keys[inst]),
                    (SERVICE, cfg.service_keys[inst]),
                ):
                    client = LedgerClient(
                        cfg.bootstrap, key, cfg.chain_id, prefix=cfg.prefix, watcher=self.watcher
                    )
                    sender = _Sender(inst, role, key, client)
                    self.senders[(inst, role)] = sender
                    self._sync_nonce(sender, initial=True)
            self._register_services()
            self.stats = Stats()
            self._loop()
            return self._finish()
        finally:
            self._close()

    def _register_services(self) -> None:
        """Register each service key (idempotent: ALREADY_EXISTS is fine). The governance
        key may be used by other processes too (gateway, batcher): on BAD_NONCE, resync and
        try again, a few times."""
        for inst, key in sorted(self.config.service_keys.items()):
            gov = self.senders[(inst, GOVERNANCE)]
            for attempt in range(5):
                if self.stop.is_set():
                    return
                nonce = gov.client.next_nonce
                receipt = gov.client.submit_and_wait(
                    "RegisterIdentity",
                    register_identity_args(
                        key,
                        chain_id=self.config.chain_id,
                        institution_id=inst,
                        kind="SERVICE",
                        label=f"{inst}-simulator",
                    ),
                    timeout=60.0,
                )
                if receipt.code is ResultCode.OK:
                    gov.best_ok = nonce
                    break
                gov.client.reset_nonce(nonce)
                if receipt.code is ResultCode.ALREADY_EXISTS:
                    break
                if receipt.code is not ResultCode.BAD_NONCE:
                    raise RuntimeError(
                        f"cannot register the simulator's service key of {inst}: "
                        f"{receipt.code.name}"
                    )
                time.sleep(0.5 * (attempt + 1))  # let the projection catch up
                self._sync_nonce(gov, initial=True)
            else:
                raise RuntimeError(f"the governance nonce of {inst} keeps changing (BAD_NONCE)")

    def _close(self) -> None:
        for sender in self.senders.values():
            try:
                sender.client.close(timeout=5.0)
            except SubmitError as exc:  # messages undelivered at the end
                self.stats.delivery_failures += len(exc.failures) or 1
        if self.watcher is not None:
            self.watcher.close()

    # the loop

    def _loop(self) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate
        start = time.monotonic()
        deadline = None if cfg.seconds is None else start + cfg.seconds
        next_send = start
        next_display = start + 1.0
        next_receipts = start
        while not self.stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_receipts:
                self._collect(now)
                next_receipts = now + 0.05
            sent_now = 0
            while next_send <= now and sent_now < 1000 and not self.stop.is_set():
                if not self._send_one(now):
                    next_send = now + 0.05  # every sender paused: try again shortly
                    break
                sent_now += 1
                next_send += interval
            if now - next_send > 1.0:
                next_send = now  # fell behind: do not burst to catch up
            if now >= next_display:
                self._display(now)
                next_display = now + 1.0
            time.sleep(max(0.0, min(next_send, next_receipts, next_display) - time.monotonic()))
        self._drain()

    def _ready(self) -> set[SenderId]:
        return {sid for sid, s in self.senders.items() if s.paused_at is None}

    def _send_one(self, now: float) -> bool:
        planned = self.planner.plan(self._ready(), int(time.time() * 1000))
        if planned is None:
            return False
        sender = self.senders[planned.sender]
        nonce = sender.client.next_nonce
        try:
            tx_id = sender.client.submit(planned.operation, planned.args)
        except SubmitError:  # queue stayed full, or refused: settle as unsent, resync
            self.stats.delivery_failures += 1
            self.planner.settled(planned, b"", None)
            sender.paused_at = now
            return True
        sender.inflight[tx_id] = _Flight(planned, nonce, now)
        self.stats.sent += 1
        self.stats.by_kind[planned.kind] += 1
        return True

    def _collect(self, now: float) -> None:
        watcher = self.watcher
        assert watcher is not None
        if not watcher.alive:
            raise RuntimeError("the receipt watcher stopped")
        in_flight = 0
        for sender in self.senders.values():
            for tx_id, flight in list(sender.inflight.items()):
                receipt = watcher.get(tx_id)
                if receipt is None:
                    if now - flight.sent_at > self.config.receipt_timeout:
                        del sender.inflight[tx_id]
                        self.stats.timeouts += 1
                        self.planner.settled(flight.planned, tx_id, None)
                        sender.paused_at = sender.paused_at or now
                    continue
                del sender.inflight[tx_id]
                self.planner.settled(flight.planned, tx_id, receipt.code)
                if receipt.code is ResultCode.OK:
                    self.stats.accepted += 1
                    sender.best_ok = max(sender.best_ok or 0, flight.nonce)
                else:
                    self.stats.rejected[receipt.code.name] += 1
                    sender.paused_at = sender.paused_at or now  # later nonces will fail
            paused = sender.paused_at
            if paused is not None and not sender.inflight and now - paused >= 0.5:
                self._sync_nonce(sender)
            in_flight += len(sender.inflight)
        self.stats.in_flight = in_flight

    def _sync_nonce(self, sender: _Sender, *, initial: bool = False) -> None:
        from_chain = self.nonce_lookup(sender.institution, sender.key.key_id)
        from_receipts = sender.base_nonce if sender.best_ok is None else sender.best_ok + 1
        if from_chain is None and initial:
            from_chain = 0
        nonce = max(from_chain or 0, from_receipts)
        sender.client.reset_nonce(nonce)
        sender.base_nonce = nonce
        sender.best_ok = None
        sender.paused_at = None
        if not initial:
            self.stats.resyncs += 1

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.drain
        next_display = time.monotonic()
        while time.monotonic() < deadline:
            now = time.monotonic()
            self._collect(now)
            if not self.stats.in_flight:
                break
            if now >= next_display:
                self._display(now)
                next_display = now + 1.0
            time.sleep(0.1)
        for sender in self.senders.values():
            self.stats.timeouts += len(sender.inflight)
            sender.inflight.clear()
        self.stats.in_flight = 0

    def _display(self, now: float) -> None:
        if self.progress is not None:
            self.progress.write("\r\x1b[2K" + self.stats.line(now))
            self.progress.flush()

    def _finish(self) -> dict[str, Any]:
        if self.progress is not None:
            self.progress.write("\r\x1b[2K")
            self.progress.flush()
        return self.stats.summary(time.monotonic())

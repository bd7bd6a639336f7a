"""Load generator threads of the fault tests: one start/stop/error shape, and the producer
of signed ``AnchorData`` that the kill loop and the broker-loss test both run."""

from __future__ import annotations

import threading
import time
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer

from harness.consortium import Consortium, anchor_args
from ledger.keys import KeyPair
from ledger.tx import parse_tx
from runtime.kafka_config import producer_config


class LoadThread:
    """A daemon thread running :meth:`work` until :meth:`stop`; an exception it raises is
    re-raised by :meth:`stop`."""

    join_timeout = 90.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def work(self) -> None:
        """The load; returns when ``stop_event`` is set."""
        raise NotImplementedError

    def _run(self) -> None:
        try:
            self.work()
        except BaseException as exc:
            self.error = exc

    def start(self) -> Self:
        """Start the thread; returns ``self``."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end, wait for it, and re-raise what it raised."""
        self.stop_event.set()
        self.thread.join(self.join_timeout)
        assert not self.thread.is_alive(), f"{self.name}: thread did not end"
        if self.error is not None:
            raise self.error


class Producing(LoadThread):
    """A producer thread: signed ``AnchorData`` at a steady rate, every delivery report kept.

    ``overrides`` go to the producer configuration; failures are recorded per tx id, and
    ``order`` lists the tx ids in produce order, so a test can tell what was submitted after
    a given moment. :meth:`stop` also asserts that every message was reported.
    """

    flush_timeout = 120.0
    join_timeout = flush_timeout + 30

    def __init__(
        self, c: Consortium, signer: KeyPair, tag: str, rate: float, **overrides: Any
    ) -> None:
        super().__init__(tag)
        self.c, self.signer, self.tag, self.interval = c, signer, tag, 1.0 / rate
        self.overrides = overrides
        self.produced: dict[bytes, bytes] = {}
        self.order: list[bytes] = []
        self.acked: set[bytes] = set()
        self.failed: dict[bytes, str] = {}
        self.sent_at: dict[bytes, float] = {}
        self.reported_at: dict[bytes, float] = {}
        self.unreported = 0

    def work(self) -> None:
        producer = Producer(producer_config(self.c.bootstrap, **self.overrides))
        i = 0
        while not self.stop_event.is_set():
            raw = self.c.tx(self.signer, "AnchorData", anchor_args(f"{self.tag}-{i}"))
            tid = parse_tx(raw).tx_id
            self.produced[tid] = raw
            self.order.append(tid)
            self.sent_at[tid] = time.monotonic()

            def done(err: KafkaError | None, _msg: Message, tid: bytes = tid) -> None:
                self.reported_at[tid] = time.monotonic()
                if err is None:
                    self.acked.add(tid)
                else:
                    self.failed[tid] = str(err)

            producer.produce(
                self.c.topic("tx"), key=self.signer.key_id, value=raw, on_delivery=done
            )
            producer.poll(0)
            i += 1
            self.stop_event.wait(self.interval)
        self.unreported = producer.flush(self.flush_timeout)

    def slowest_failure(self) -> float:
        """Seconds from produce to failure report, the longest (0 if nothing failed)."""
        return max((self.reported_at[t] - self.sent_at[t] for t in self.failed), default=0.0)

    def stop(self) -> None:
        """Stop producing and wait until every message was reported (or the flush gave up)."""
        super().stop()
        assert self.unreported == 0, (
            f"{self.tag}: {self.unreported} messages neither acknowledged nor failed "
            f"{self.flush_timeout:.0f}s after the last produce (overrides {self.overrides})"
        )

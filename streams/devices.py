"""Device SDK for IoT backends: register devices on chain, produce device-signed readings.

Usage::

    from streams.devices import Device, DeviceProducer, register_devices

    register_devices(client, [sensor.key], institution="inst-1")  # RegisterIdentity(DEVICE)
    with DeviceProducer("127.0.0.1:19092") as out:
        out.send(sensor.record(b"21.5", measured_at_ms=now_ms))        # one signature each
        out.send(sensor.bundle([(now_ms, b"21.5"), (now_ms + 1000, b"21.6")]))  # one for many
    # flush() / close() raise DeviceSendError if anything was not delivered

Theory of operation
-------------------
* A :class:`Device` holds a device key and its next sequence number; each reading (or
  bundle of readings) takes the next sequence(s), strictly increasing, so the batcher can
  reject replays. A backend that restarts must resume from a sequence above the last one it
  sent (e.g. persisted, or the wall clock in milliseconds).
* :class:`DeviceProducer` produces to ``<prefix>l2.records`` keyed by the device key id, so
  one device's readings stay in one partition, in order; the producer is idempotent with
  ``acks=all`` and reports every failed delivery on :meth:`~DeviceProducer.flush`.
* :func:`register_devices` sends ``RegisterIdentity`` (kind ``DEVICE``) with the institution's
  governance key (or a SERVICE key) through a :class:`~streams.sdk.LedgerClient` and waits for
  the receipts; ``ALREADY_EXISTS`` counts as registered. Each registration carries the
  device key's proof of possession (:func:`ledger.key_proofs.register_identity_args`, D63),
  which names the institution, so the caller says which one it is.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from ledger.devices import sign_device_record
from ledger.key_proofs import register_identity_args
from ledger.keys import KeyPair
from ledger.l2 import sign_device_bundle
from ledger.results import ResultCode
from runtime.delivery import close_producer
from runtime.kafka_config import producer_config
from runtime.topics import DEFAULT_PREFIX
from streams.sdk import LedgerClient, SdkError

__all__ = ["Device", "DeviceProducer", "DeviceSendError", "register_devices"]


class DeviceSendError(SdkError):
    """Readings were not delivered (``failures`` holds the reasons)."""

    def __init__(self, message: str, failures: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


@dataclass(slots=True)
class Device:
    """A device key and its next sequence number."""

    key: KeyPair
    next_sequence: int = 0
    content_type: str = "application/octet-stream"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _take(self, count: int) -> int:
        with self._lock:
            first = self.next_sequence
            self.next_sequence += count
            return first

    def record(self, payload: bytes, *, measured_at_ms: int) -> tuple[bytes, bytes]:
        """(key, value) of the next reading as a signed ``DeviceRecord``."""
        rec = sign_device_record(
            self.key,
            sequence=self._take(1),
            measured_at_ms=measured_at_ms,
            content_type=self.content_type,
            payload=payload,
        )
        return self.key.key_id, rec.encode()

    def bundle(self, readings: Sequence[tuple[int, bytes]]) -> tuple[bytes, bytes]:
        """(key, value) of the next ``len(readings)`` readings as one signed ``DeviceBundle``."""
        bundle = sign_device_bundle(
            self.key,
            first_sequence=self._take(len(readings)),
            content_type=self.content_type,
            readings=readings,
        )
        return self.key.key_id, bundle.encode()


class DeviceProducer:
    """Produces device-signed messages to ``<prefix>l2.records`` (module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        producer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        overrides = dict(producer_overrides or {})
        if overrides.get("enable.idempotence", True) is not True or str(
            overrides.get("acks", "all")
        ) not in ("all", "-1"):
            raise ValueError("the device producer must stay idempotent with acks=all")
        self.topic = f"{prefix}l2.records"
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._failures: list[str] = []
        self._lock = threading.Lock()
        self.sent = 0

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failures.append(err.str())

    def send(self, message: tuple[bytes, bytes]) -> None:
        """Queue one (key, value) from :meth:`Device.record` / :meth:`Device.bundle`."""
        key, value = message
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for every queued message; :class:`DeviceSendError` if any was not delivered."""
        remaining = self._producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if failures or remaining:
            raise DeviceSendError(
                f"{len(failures)} failed, {remaining} undelivered after {timeout:g}s", failures
            )

    def close(self, timeout: float = 30.0) -> None:
        """Flush and release the producer (destroyed even if the flush failed, D71)."""
        try:
            self.flush(timeout)
        finally:
            close_producer(self._producer, 0)

    def __enter__(self) -> DeviceProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()


def register_devices(
    client: LedgerClient,
    devices: Sequence[KeyPair],
    *,
    institution: str,
    label: str = "device",
    timeout: float = 60.0,
) -> None:
    """Register device keys on chain (``RegisterIdentity`` kind DEVICE, each with its proof
    of possession, D63) for ``institution`` (the client's) and wait for them."""
    tx_ids = [
        client.submit(
            "RegisterIdentity",
            register_identity_args(
                d,
                chain_id=client.chain_id,
                institution_id=institution,
                kind="DEVICE",
                label=f"{label}-{i}",
            ),
        )
        for i, d in enumerate(devices)
    ]
    client.flush(timeout)
    for tx_id in tx_ids:
        receipt = client.wait_receipt(tx_id, timeout)
        if receipt.code not in (ResultCode.OK, ResultCode.ALREADY_EXISTS):
            raise SdkError(f"device registration rejected: {receipt.code.name}")

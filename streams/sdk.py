"""The client SDK of an IoT backend or gateway: sign, submit, and wait for verified outcomes.

Usage::

    from infra.keystore import load_genesis
    from ledger.keys import KeyPair
    from streams.sdk import LedgerClient

    key = KeyPair.from_seed(seed)  # an identity registered on chain
    genesis = load_genesis(Path("genesis.avro"))  # the trust anchor of every outcome
    with LedgerClient("127.0.0.1:19092", key, "pantheon-main", genesis=genesis,
                      next_nonce=7) as client:
        tx_id = client.submit("AnchorData", {"data_id": "d1", "sha256": digest, "metadata": ""})
        client.flush(10)  # raises SubmitError if anything was not delivered
        receipt = client.wait_receipt(tx_id, timeout=30)
        print(receipt.height if receipt.accepted else receipt.code.name)
        # a key rotation carries the new key's proof of possession (decisions D61):
        # from ledger.key_proofs import rotate_key_args
        new_key = KeyPair.from_seed(new_seed)
        client.submit("RotateKey", rotate_key_args(new_key, chain_id="pantheon-main",
                      key_id=key.key_id, old_public_key=key.public_key))
        # so does every key registered (D63): register_identity_args, add_operator_args,
        # propose_member_args of ledger.key_proofs, which name the institution too
        client.submit("RegisterIdentity", register_identity_args(device_key,
                      chain_id="pantheon-main", institution_id="acme", kind="DEVICE",
                      label="sensor-7"))

Theory of operation
-------------------
* :meth:`LedgerClient.submit` takes the next nonce (strictly sequential per client and
  thread-safe: nonce allocation and produce happen under one lock, so the tx topic holds a
  client's transactions in nonce order), signs a ``TxEnvelope`` with
  :func:`ledger.tx.sign_tx`, produces it to ``<prefix>tx`` keyed by the sender's key id with
  an idempotent ``acks=all`` producer, and returns the tx id. A nonce is used up only once
  the envelope is queued in the producer.
* Delivery is asynchronous. Every failed delivery is recorded by the delivery callback and
  raised by the next :meth:`~LedgerClient.flush` (or :meth:`~LedgerClient.close`) as
  :class:`SubmitError`, with the tx ids and nonces concerned: nothing is lost silently. The
  chain requires sequential nonces, so after a failure the transactions that followed the
  failed one will be rejected with ``BAD_NONCE``; resubmit from the first failed nonce
  (:meth:`~LedgerClient.reset_nonce`).
* Outcomes (:class:`Receipt`) come from a :class:`~streams.receipts.ReceiptWatcher`, which
  verifies the quorum certificates of ``FinalizedBlock`` copies against validator sets
  established from ``genesis`` (decisions D22); it is started before the client's first
  produce (so none of its outcomes can be missed) unless one is passed in (e.g. shared by many
  clients) or ``watch_receipts=False``. Without ``genesis`` (or a watcher) a client can submit
  but not wait: an outcome it cannot verify is no outcome. The unsigned receipts topic is
  never read as an outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ledger.genesis import Genesis
from ledger.keys import KeyPair
from ledger.outcomes import SetSource
from ledger.tx import DEFAULT_MAX_TX_BYTES, parse_tx, sign_tx
from runtime.kafka_config import error_text, producer_config
from runtime.topics import DEFAULT_PREFIX
from streams.receipts import (
    OutcomeUnverifiable,
    Receipt,
    ReceiptTimeout,
    ReceiptWatcher,
    SdkError,
)

__all__ = [
    "DeliveryFailure",
    "LedgerClient",
    "OutcomeUnverifiable",
    "Receipt",
    "ReceiptTimeout",
    "ReceiptWatcher",
    "SdkError",
    "SubmitError",
]

_ENQUEUE_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One message that was not delivered (``tx_id``/``nonce`` are None for raw submits)."""

    tx_id: bytes | None
    nonce: int | None
    reason: str


class SubmitError(SdkError):
    """Transactions were refused, not delivered, or their delivery failed."""

    def __init__(self, message: str, failures: tuple[DeliveryFailure, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures


class LedgerClient:
    """Signs and submits transactions of one key; optionally waits for their receipts."""

    def __init__(
        self,
        bootstrap: str,
        key: KeyPair,
        chain_id: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        next_nonce: int = 0,
        producer_overrides: Mapping[str, Any] | None = None,
        watch_receipts: bool = True,
        watcher: ReceiptWatcher | None = None,
        genesis: Genesis | None = None,
        validator_sets: SetSource | None = None,
        check_receipts: bool = False,
    ) -> None:
        if next_nonce < 0:
            raise ValueError("next_nonce must be non-negative")
        if genesis is not None and genesis.params.chain_id != chain_id:
            raise ValueError(f"the genesis is of chain {genesis.params.chain_id}, not {chain_id}")
        overrides = dict(producer_overrides or {})
        if overrides.get("enable.idempotence", True) is not True or str(
            overrides.get("acks", "all")
        ) not in ("all", "-1"):
            raise ValueError("the SDK's producer must stay idempotent with acks=all")
        self.bootstrap = bootstrap
        self.key = key
        self.chain_id = chain_id
        self.prefix = prefix
        self.topic = f"{prefix}tx"
        self._nonce = next_nonce
        self._lock = threading.Lock()
        self._failures: list[DeliveryFailure] = []
        self._failures_lock = threading.Lock()
        self._producer = Producer(producer_config(bootstrap, **overrides))
        self._watch = watch_receipts or watcher is not None
        self.genesis = genesis
        self._validator_sets = validator_sets
        self._check_receipts = check_receipts
        self._watcher = watcher
        self._owns_watcher = watcher is None
        self._closed = False

    # -- submitting -------------------------------------------------------------------

    @property
    def next_nonce(self) -> int:
        """The nonce the next :meth:`submit` will use."""
        with self._lock:
            return self._nonce

    def reset_nonce(self, nonce: int) -> None:
        """Continue from ``nonce`` (e.g. after a :class:`SubmitError`)."""
        if nonce < 0:
            raise ValueError("nonce must be non-negative")
        with self._lock:
            self._nonce = nonce

    def submit(self, operation: str, args: Mapping[str, Any]) -> bytes:
        """Sign ``operation(args)`` with the next nonce, queue it, return its tx id."""
        with self._lock:
            self._check_open()
            nonce = self._nonce
            raw = sign_tx(
                self.key, chain_id=self.chain_id, nonce=nonce, operation=operation, args=args
            )
            if len(raw) > DEFAULT_MAX_TX_BYTES:
                raise SubmitError(f"transaction is {len(raw)} bytes > {DEFAULT_MAX_TX_BYTES}")
            tx_id = parse_tx(raw).tx_id
            self._ensure_watcher()
            self._produce(raw, self.key.key_id, tx_id, nonce)
            self._nonce = nonce + 1
        return tx_id

    def submit_raw(self, raw: bytes, key: bytes) -> None:
        """Queue pre-signed envelope bytes keyed by ``key`` (the sender's key id)."""
        with self._lock:
            self._check_open()
            self._ensure_watcher()
            self._produce(raw, key, None, None)

    def _produce(self, raw: bytes, key: bytes, tx_id: bytes | None, nonce: int | None) -> None:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                with self._failures_lock:
                    self._failures.append(DeliveryFailure(tx_id, nonce, err.str()))

        deadline = time.monotonic() + _ENQUEUE_TIMEOUT
        while True:
            try:
                self._producer.produce(self.topic, value=raw, key=key, on_delivery=on_delivery)
                break
            except BufferError as exc:  # local queue full: serve callbacks, try again
                if time.monotonic() > deadline:
                    raise SubmitError("producer queue stayed full") from exc
                self._producer.poll(0.1)
            except KafkaException as exc:
                raise SubmitError(f"produce refused: {error_text(exc)}") from exc
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued message is delivered; :class:`SubmitError` otherwise.

        Failures are reported once: a second flush does not raise them again.
        """
        self._check_open()
        self._flush(timeout)

    def _flush(self, timeout: float) -> None:
        remaining = self._producer.flush(timeout)
        with self._failures_lock:
            failures, self._failures = tuple(self._failures), []
        if failures or remaining:
            parts = []
            if failures:
                parts.append(f"{len(failures)} failed ({failures[0].reason})")
            if remaining:
                parts.append(f"{remaining} still undelivered after {timeout:g}s")
            raise SubmitError("submit: " + ", ".join(parts), failures)

    # -- receipts ---------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watch and self._watcher is None and self.genesis is not None:
            self._watcher = ReceiptWatcher(
                self.bootstrap,
                genesis=self.genesis,
                prefix=self.prefix,
                validator_sets=self._validator_sets,
                check_receipts=self._check_receipts,
            )

    @property
    def watcher(self) -> ReceiptWatcher | None:
        """The outcome watcher (None before the first submit or without a genesis)."""
        return self._watcher

    def wait_receipt(self, tx_id: bytes, timeout: float = 30.0) -> Receipt:
        """The verified outcome of ``tx_id``; :class:`ReceiptTimeout` after ``timeout``
        seconds (:class:`OutcomeUnverifiable` if it was seen only in blocks whose validator
        set could not be established)."""
        with self._lock:
            self._check_open()
            if not self._watch:
                raise SdkError("this client was created with watch_receipts=False")
            self._ensure_watcher()
            if self._watcher is None:
                raise SdkError(
                    "outcomes are verified against the genesis: create the client with "
                    "genesis= (or pass a watcher)"
                )
            watcher = self._watcher
        assert watcher is not None
        return watcher.wait(tx_id, timeout)

    def submit_and_wait(
        self, operation: str, args: Mapping[str, Any], timeout: float = 30.0
    ) -> Receipt:
        """:meth:`submit`, :meth:`flush`, then :meth:`wait_receipt`, all within ``timeout``."""
        if self._watch and self._watcher is None and self.genesis is None:
            raise SdkError("submit_and_wait needs genesis= (outcomes are verified against it)")
        deadline = time.monotonic() + timeout
        tx_id = self.submit(operation, args)
        self.flush(timeout)
        return self.wait_receipt(tx_id, max(0.0, deadline - time.monotonic()))

    # -- lifecycle --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SdkError("client is closed")

    def close(self, timeout: float = 10.0) -> None:
        """Flush (at most ``timeout`` s), stop the watcher it owns, release the producer.

        Raises :class:`SubmitError` if messages were undelivered (they are purged).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            if self._producer.flush(timeout):
                self._producer.purge()
                self._producer.poll(0)  # purged messages report their failure
            self._flush(0)
        finally:
            self._producer.close()
            if self._owns_watcher and self._watcher is not None:
                self._watcher.close()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except SubmitError:
            if exc is None:
                raise  # else the exception in flight wins; its cause is the likelier story

"""The batcher's committer thread: a CommitBatch for every sealed batch, oldest first, and the
rejected outbox published to ``<prefix>l2.rejected`` (module docstring of
:mod:`readers.batcher`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ledger.results import ResultCode
from projections import l2 as store
from projections import read
from readers.batcher.config import BatcherConfig, rejected_topic
from readers.batcher.metrics import COMMITTED
from runtime.kafka_config import admin_config, producer_config
from runtime.topics import L2_PARTITIONS, ledger_config, wait_visible
from schemas.codec import encode
from streams.receipts import ReceiptTimeout
from streams.sdk import LedgerClient, SubmitError

log = logging.getLogger("pantheon.batcher")


def ensure_rejected_topic(bootstrap: str, prefix: str, timeout: float = 30.0) -> None:
    """Create ``<prefix>l2.rejected`` with the ledger topic settings if it is missing."""
    admin = AdminClient(admin_config(bootstrap))
    name = rejected_topic(prefix)
    metadata = admin.list_topics(timeout=timeout)
    if name not in metadata.topics:
        replication = 3 if len(metadata.brokers) >= 3 else 1
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=L2_PARTITIONS,
                    replication_factor=replication,
                    config=ledger_config(replication),
                )
            ],
            operation_timeout=timeout,
        )
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
    wait_visible(admin, [name], timeout=timeout)


class Committer:
    """Commits the sealed batches of the partitions ``owned()`` returns; ``sealed`` is set
    whenever the batcher seals one."""

    def __init__(
        self, config: BatcherConfig, owned: Callable[[], frozenset[int]], sealed: threading.Event
    ) -> None:
        self.config = config
        self.owned = owned
        self.sealed = sealed
        self.committed = 0
        self.failure: BaseException | None = None

    def run(self, stop: threading.Event) -> None:
        """Submit CommitBatch for sealed batches and publish rejected messages until ``stop``."""
        cfg = self.config
        conn = psycopg.connect(cfg.dsn, autocommit=True, connect_timeout=10)
        producer = Producer(producer_config(cfg.bootstrap))
        client = LedgerClient(
            cfg.bootstrap,
            cfg.key,
            cfg.chain_id,
            prefix=cfg.prefix,
            genesis=cfg.genesis,
            validator_sets=read.validator_set_source(cfg.dsn),
        )
        nonce_known, need_height, backoff = False, 0, 0.2
        try:
            while not stop.is_set():
                self._publish_rejected(conn, producer)
                # a partition's sealed batches are committed by the process that holds it
                pending = store.pending_batches(conn, cfg.consumer, self.owned())
                if not pending:
                    self.sealed.wait(0.2)
                    self.sealed.clear()
                    continue
                if not nonce_known:
                    nonce = self._chain_nonce(conn, need_height, stop)
                    if nonce is None:
                        continue
                    client.reset_nonce(nonce)
                    nonce_known = True
                    # read with the nonce, from the same projection: batches a killed
                    # process committed (its receipts never seen here) are not sent again
                    pending = self._skip_landed(conn, pending)
                    if not pending:
                        continue
                ok, height = self._submit(conn, client, pending)
                need_height = max(need_height, height)
                if not ok:
                    nonce_known = False
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                else:
                    backoff = 0.2
        except BaseException as exc:
            self.failure = exc
            log.exception("committer failed")
            raise
        finally:
            try:
                client.close()
            except SubmitError:
                log.warning("undelivered CommitBatch transactions at close (resubmitted later)")
            producer.flush(10)
            conn.close()

    def _skip_landed(
        self, conn: psycopg.Connection[Any], pending: list[store.Batch]
    ) -> list[store.Batch]:
        landed = store.on_chain(conn, [b.batch_id for b in pending])
        for b in pending:
            if b.batch_id in landed:
                store.mark_committed(conn, b.batch_id, None, int(ResultCode.ALREADY_EXISTS))
                self.committed += 1
                COMMITTED.labels(self.config.institution).inc()
        if landed:
            log.info("%d sealed batches were already on chain (an earlier try)", len(landed))
        return [b for b in pending if b.batch_id not in landed]

    def _chain_nonce(
        self, conn: psycopg.Connection[Any], height: int, stop: threading.Event
    ) -> int | None:
        if store.projected_height(conn) < height:
            stop.wait(0.1)
            return None
        key = store.chain_key(conn, self.config.key.key_id)
        if key is None or not key[2] or key[1] != self.config.institution:
            log.error(
                "the batcher key is not an active key of %s on chain (yet)", self.config.institution
            )
            stop.wait(1.0)
            return None
        return key[3]

    def _submit(
        self, conn: psycopg.Connection[Any], client: LedgerClient, pending: list[store.Batch]
    ) -> tuple[bool, int]:
        sent = [(b, client.submit("CommitBatch", b.commit_args())) for b in pending]
        try:
            client.flush(30)
        except SubmitError as exc:
            log.warning("CommitBatch delivery failed: %s", exc)
            return False, 0
        ok, height = True, 0
        codes: dict[str, int] = {}
        started = time.monotonic()
        deadline = started + self.config.receipt_timeout
        for b, tx_id in sent:
            try:
                receipt = client.wait_receipt(tx_id, max(0.1, deadline - time.monotonic()))
            except ReceiptTimeout:
                log.warning("no receipt for batch %s; will resubmit", b.batch_id)
                return False, height
            height = max(height, receipt.height)
            codes[receipt.code.name] = codes.get(receipt.code.name, 0) + 1
            if receipt.code in (ResultCode.OK, ResultCode.ALREADY_EXISTS):
                store.mark_committed(conn, b.batch_id, tx_id, int(receipt.code))
                self.committed += 1
                COMMITTED.labels(self.config.institution).inc()
            if receipt.code is not ResultCode.OK:
                if receipt.code not in (ResultCode.ALREADY_EXISTS, ResultCode.BAD_NONCE):
                    log.error("CommitBatch %s rejected: %s", b.batch_id, receipt.code.name)
                ok = False
        log.info(
            "submitted %d CommitBatch from nonce %d: %s in %.2fs",
            len(sent),
            client.next_nonce - len(sent),
            codes,
            time.monotonic() - started,
        )
        return ok, height

    def _publish_rejected(self, conn: psycopg.Connection[Any], producer: Producer) -> None:
        rows = store.unpublished_rejected(conn)
        if not rows:
            return
        target = rejected_topic(self.config.prefix)
        for topic, partition, r in rows:
            record = {
                "topic": topic,
                "partition": partition,
                "offset": r.offset,
                "reason": r.reason,
                "device_key_id": r.device_key_id,
                "sequence": r.sequence,
                "raw": r.raw,
            }
            value = encode("L2Rejected", record)
            while True:
                try:
                    producer.produce(
                        target,
                        key=r.device_key_id or None,
                        value=value,
                        headers={"reason": r.reason.encode()},
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
        if producer.flush(30) == 0:
            store.mark_published(conn, [(t, p, r.offset) for t, p, r in rows])

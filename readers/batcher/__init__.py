"""The Layer-2 batcher of one institution (``pantheon batcher``): device records to CommitBatch.

``python -m readers.batcher --institution X --keystore K --genesis G --bootstrap B --dsn DSN``

Theory of operation
-------------------
* A consumer group (``pantheon-batcher-<institution>``) shares the partitions of
  ``<prefix>l2.records``; each process batches the partitions it is assigned. Kafka's group is
  used for assignment only: positions live in Postgres (``l2.positions``) and are loaded on
  every assignment; nothing is ever committed to Kafka.
* Each message is parsed (:func:`ledger.l2.parse_l2`), its device looked up in the chain
  projection (``chain.keys``), its Ed25519 signature verified in parallel
  (:class:`Verifier`: a thread pool, since the verifier releases the GIL while verifying;
  ``bench/l2.py`` measures threads against processes), then admitted in log order
  (:func:`ledger.l2.admit`): unknown or revoked device, bad signature or replayed sequence
  goes to the rejected outbox with its reason. Devices of other institutions are skipped
  (their institution's batcher anchors them).
* A window per partition closes after ``max_records`` messages or ``window_ms`` since its
  first message. Closing builds the RFC 6962 tree with :mod:`ledger.merkle` and calls
  :func:`projections.l2.seal`: batch, leaves, device sequences, rejected messages and the new
  position in ONE Postgres transaction. A crash before it loses nothing (the window is
  re-read); after it, nothing is read twice.
* A committer thread submits a ``CommitBatch`` for every sealed batch, oldest first, with the
  deterministic batch id of :func:`ledger.l2.batch_id`; a receipt OK or ``ALREADY_EXISTS``
  (an earlier attempt, before a crash, got there first) marks the batch committed. Nonces:
  read from ``chain.keys.next_nonce`` once the projection has reached the height of every
  receipt seen, then counted locally; any non-OK receipt or a timeout makes it re-read
  (``BAD_NONCE`` recovery); with a re-read nonce, sealed batches the chain projection
  already holds (committed by a killed process whose receipts were never seen) are marked
  committed instead of being sent again. The same thread publishes the rejected outbox to
  ``<prefix>l2.rejected`` (at least once; consumers dedupe on topic/partition/offset).
* The signing key must be a SERVICE identity of the institution (or, for the local demo, its
  governance key): both may send ``CommitBatch``. Each process of the group commits the sealed
  batches of the partitions it holds (a new owner re-submits what the old one left), and
  needs its own key: two processes signing with one key would race for its nonces.
"""

from readers.batcher.cli import (
    EXIT_CONFIG,
    EXIT_OK,
    build_parser,
    config_from_args,
    load_signing_key,
    main,
)
from readers.batcher.committer import Committer, ensure_rejected_topic
from readers.batcher.config import BatcherConfig, records_topic, rejected_topic
from readers.batcher.metrics import export_at_zero
from readers.batcher.process import Batcher
from readers.batcher.verify import Job, Verifier
from readers.batcher.window import Window

__all__ = [
    "EXIT_CONFIG",
    "EXIT_OK",
    "Batcher",
    "BatcherConfig",
    "Committer",
    "Job",
    "Verifier",
    "Window",
    "build_parser",
    "config_from_args",
    "ensure_rejected_topic",
    "export_at_zero",
    "load_signing_key",
    "main",
    "records_topic",
    "rejected_topic",
]

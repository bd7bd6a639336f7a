"""The ledger topics of DESIGN.md section 3 and their idempotent creation.

Every ledger topic keeps its data forever (``retention.ms=-1``), stamps records with the
broker's clock (``message.timestamp.type=LogAppendTime``), and on a multi-broker cluster
is replicated 3 times with ``min.insync.replicas=2``. ``ensure_topics`` creates what is
missing, leaves what exists alone, and fails loudly if an existing topic has a setting
that would break the ledger's guarantees (e.g. a finite retention).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

DEFAULT_PREFIX = "pantheon."
L2_PARTITIONS = 6


class TopicError(RuntimeError):
    """A topic could not be created or exists with unsafe settings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    """A topic's name (without prefix), partition count and extra configuration."""

    suffix: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)

    def name(self, prefix: str = DEFAULT_PREFIX) -> str:
        return f"{prefix}{self.suffix}"


LEDGER_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(suffix="tx"),
    TopicSpec(suffix="votes"),
    TopicSpec(suffix="blocks"),
    TopicSpec(suffix="receipts"),
    TopicSpec(suffix="feeds"),  # primaries' executed blocks for their standbys (D52)
    TopicSpec(suffix="l2.records", partitions=L2_PARTITIONS),
    TopicSpec(suffix="l2.rejected", partitions=L2_PARTITIONS),
)


def iam_topic(institution: str) -> TopicSpec:
    """The user-management topic of one institution."""
    if not institution or not all(c.isalnum() or c in "-_" for c in institution):
        raise TopicError(f"invalid institution id {institution!r} for a topic name")
    return TopicSpec(suffix=f"iam.{institution}")


def ledger_config(replication_factor: int) -> dict[str, str]:
    """The settings every ledger topic carries."""
    return {
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "message.timestamp.type": "LogAppendTime",
        "cleanup.policy": "delete",
        "min.insync.replicas": "2" if replication_factor >= 3 else "1",
        "unclean.leader.election.enable": "false",
    }


def topic_specs(institutions: Iterable[str] = ()) -> list[TopicSpec]:
    """Every topic a consortium with these institutions needs."""
    return [*LEDGER_TOPICS, *(iam_topic(i) for i in institutions)]


def ensure_topics(
    admin: Any,
    *,
    prefix: str = DEFAULT_PREFIX,
    institutions: Sequence[str] = (),
    replication_factor: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing ledger topics; return the names created (empty if none).

    ``admin`` is a ``confluent_kafka.admin.AdminClient``. ``replication_factor`` defaults
    to 3 when the cluster has 3 or more brokers, else 1.
    """
    metadata = admin.list_topics(timeout=timeout)
    if replication_factor is None:
        replication_factor = 3 if len(metadata.brokers) >= 3 else 1
    wanted = {spec.name(prefix): spec for spec in topic_specs(institutions)}
    missing = [name for name in wanted if name not in metadata.topics]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=wanted[name].partitions,
                    replication_factor=replication_factor,
                    config={**ledger_config(replication_factor), **wanted[name].config},
                )
                for name in missing
            ],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"creating topic {name} failed: {exc}") from exc
    wait_visible(admin, list(wanted), timeout=timeout)
    check_topics(admin, list(wanted), timeout=timeout)
    return created


def wait_visible(admin: Any, names: Sequence[str], *, timeout: float = 30.0) -> None:
    """Wait until every topic is in the metadata with a leader for every partition."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        pending = [
            n
            for n in names
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics not ready after {timeout:.0f}s: {', '.join(pending)}")
        time.sleep(0.2)


def check_topics(admin: Any, names: Sequence[str], *, timeout: float = 30.0) -> None:
    """Raise TopicError if a ledger topic would lose or re-time records."""
    deadline = time.monotonic() + timeout
    for name in names:
        entries = _topic_config(admin, name, deadline)
        retention = entries["retention.ms"].value
        ts_type = entries["message.timestamp.type"].value
        if retention != "-1":
            raise TopicError(f"{name} has retention.ms={retention}; the ledger needs -1")
        if ts_type != "LogAppendTime":
            raise TopicError(f"{name} has message.timestamp.type={ts_type}")


def _topic_config(admin: Any, name: str, deadline: float) -> Any:
    """A topic's configuration; retried while the broker asked has not learnt of the topic
    yet (in a multi-broker cluster, metadata reaches the brokers one after the other)."""
    resource = ConfigResource(ResourceType.TOPIC, name)
    while True:
        timeout = max(1.0, deadline - time.monotonic())
        try:
            return admin.describe_configs([resource], request_timeout=timeout)[resource].result()
        except KafkaException as exc:
            unknown = exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            if not unknown or time.monotonic() > deadline:
                raise TopicError(f"cannot read the configuration of {name}: {exc}") from exc
            time.sleep(0.2)

"""The ledger topics of DESIGN.md section 3 and their idempotent creation.

Every ledger topic keeps its data forever (``retention.ms=-1``), stamps records with the
broker's clock (``message.timestamp.type=LogAppendTime``), and on a multi-broker cluster
is replicated 3 times with ``min.insync.replicas=2``. ``ensure_topics`` creates what is
missing, leaves what exists alone, and fails loudly if an existing topic has a setting
that would break the ledger's guarantees (e.g. a finite retention).

One topic is no ledger topic and is bounded: ``pantheon.feeds`` (primaries' executed blocks
for their standbys, D52) is useful only near the head, and a standby without a feed executes
the block itself, so it keeps :data:`FEEDS_CONFIG` (D57). ``ensure_topics`` sets that on a
feeds topic created before, and ``check_topics`` requires it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

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


FEEDS_CONFIG = {
    "retention.ms": str(3600 * 1000),  # an hour
    "retention.bytes": str(1 << 30),  # and at most 1 GiB per replica (+ one segment)
    "segment.bytes": str(128 << 20),  # retention deletes whole closed segments ...
    "segment.ms": str(600 * 1000),  # ... so they roll at least every 10 minutes
}
"""The bounded retention of ``pantheon.feeds`` (D57)."""

LEDGER_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(suffix="tx"),
    TopicSpec(suffix="votes"),
    TopicSpec(suffix="blocks"),
    TopicSpec(suffix="receipts"),
    TopicSpec(suffix="feeds", config=FEEDS_CONFIG),  # for standbys (D52), bounded (D57)
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
    retention = {n: spec.config.get("retention.ms", "-1") for n, spec in wanted.items()}
    for name, spec in wanted.items():
        if spec.config and name not in created:
            _align(admin, name, spec.config, timeout)
    check_topics(admin, list(wanted), timeout=timeout, retention=retention)
    return created


def _align(admin: Any, name: str, config: dict[str, str], timeout: float) -> None:
    """Give the existing topic ``name`` the settings ``config`` (a feeds topic created
    before its retention was bounded, D57)."""
    current = _topic_config(admin, name, time.monotonic() + timeout)
    if all(current[key].value == value for key, value in config.items()):
        return
    resource = ConfigResource(
        ResourceType.TOPIC,
        name,
        incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in config.items()
        ],
    )
    try:
        admin.incremental_alter_configs([resource], request_timeout=timeout)[resource].result()
    except KafkaException as exc:
        raise TopicError(f"cannot set the configuration of {name}: {exc}") from exc
    # The broker acknowledges before its described configuration shows the change.
    deadline = time.monotonic() + timeout
    while True:
        current = _topic_config(admin, name, deadline)
        if all(current[key].value == value for key, value in config.items()):
            return
        if time.monotonic() > deadline:
            raise TopicError(f"{name} did not take its new configuration in {timeout:.0f}s")
        time.sleep(0.1)


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


def check_topics(
    admin: Any,
    names: Sequence[str],
    *,
    timeout: float = 30.0,
    retention: Mapping[str, str] | None = None,
) -> None:
    """Raise TopicError if a ledger topic would lose or re-time records (``retention``: the
    ``retention.ms`` a topic must have by name; -1, for ever, when not named)."""
    deadline = time.monotonic() + timeout
    for name in names:
        entries = _topic_config(admin, name, deadline)
        kept = entries["retention.ms"].value
        ts_type = entries["message.timestamp.type"].value
        wanted = (retention or {}).get(name, "-1")
        if kept != wanted:
            raise TopicError(f"{name} has retention.ms={kept}; it needs {wanted}")
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

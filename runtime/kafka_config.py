"""Client configuration shared by every Kafka producer and consumer of Pantheon.

Producers are idempotent with ``acks=all`` (DESIGN.md section 3): a retried send is never
written twice and an acknowledged message is on every in-sync replica. Consumers never
auto-commit: a consumer's position is stored with the work it did (projections) or
derived from the log (validators).

Credentials (D26): when the broker requires SASL (``pantheon up --kafka-auth``), every client
made here authenticates as the principal named by ``PANTHEON_KAFKA_USER``, with the password
from the file ``PANTHEON_KAFKA_PASSWORD_FILE`` (refused unless only its owner can read it) or
from ``PANTHEON_KAFKA_PASSWORD``. ``PANTHEON_KAFKA_SECURITY_PROTOCOL`` (default
``SASL_PLAINTEXT``), ``PANTHEON_KAFKA_SASL_MECHANISM`` (default ``SCRAM-SHA-512``) and
``PANTHEON_KAFKA_CA_FILE`` (for ``SASL_SSL``) complete the picture. Without a user, nothing is
added: plaintext, as before. :func:`use_credentials` makes one process act as a given
principal for a while (``pantheon up`` acting as the admin), ahead of the environment.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest record a Pantheon producer sends; the broker accepts up to twice this."""


def error_text(exc: BaseException) -> str:
    """A ``KafkaException``'s error text (its ``str()`` is ``KafkaError{code=...,str=...}``,
    D60); any other exception's ``str()``."""
    describe = getattr(exc.args[0], "str", None) if exc.args else None
    return str(describe()) if callable(describe) else str(exc)


USER_ENV = "PANTHEON_KAFKA_USER"
PASSWORD_FILE_ENV = "PANTHEON_KAFKA_PASSWORD_FILE"
PASSWORD_ENV = "PANTHEON_KAFKA_PASSWORD"
PROTOCOL_ENV = "PANTHEON_KAFKA_SECURITY_PROTOCOL"
MECHANISM_ENV = "PANTHEON_KAFKA_SASL_MECHANISM"
CA_FILE_ENV = "PANTHEON_KAFKA_CA_FILE"
DEFAULT_MECHANISM = "SCRAM-SHA-512"


class CredentialError(ValueError):
    """Kafka credentials are configured but unusable (missing or readable password file)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """A SASL principal and where its password is."""

    user: str
    password_file: Path | None = None
    password: str | None = None
    protocol: str = "SASL_PLAINTEXT"
    mechanism: str = DEFAULT_MECHANISM
    ca_file: str | None = None

    def secret(self) -> str:
        """The password: from the file (owner-only) if one is named."""
        if self.password_file is None:
            if not self.password:
                raise CredentialError(f"no password for Kafka user {self.user!r}")
            return self.password
        try:
            mode = self.password_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise CredentialError(
                    f"{self.password_file} is readable by others (mode {mode & 0o777:o}); "
                    "chmod 600 it"
                )
            secret = self.password_file.read_text().strip()
        except OSError as exc:
            raise CredentialError(f"cannot read the Kafka password file: {exc}") from exc
        if not secret:
            raise CredentialError(f"{self.password_file} is empty")
        return secret

    def config(self) -> dict[str, Any]:
        """librdkafka settings that authenticate as this principal."""
        out: dict[str, Any] = {
            "security.protocol": self.protocol,
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.user,
            "sasl.password": self.secret(),
        }
        if self.ca_file:
            out["ssl.ca.location"] = self.ca_file
        return out


_ACTIVE: list[Credentials] = []
"""Credentials set by :func:`use_credentials` (innermost last); ahead of the environment."""


def credentials_from_env() -> Credentials | None:
    """The principal the environment names, or None (plaintext, no authentication)."""
    user = os.environ.get(USER_ENV, "")
    if not user:
        return None
    password_file = os.environ.get(PASSWORD_FILE_ENV, "")
    return Credentials(
        user=user,
        password_file=Path(password_file) if password_file else None,
        password=os.environ.get(PASSWORD_ENV) or None,
        protocol=os.environ.get(PROTOCOL_ENV) or "SASL_PLAINTEXT",
        mechanism=os.environ.get(MECHANISM_ENV) or DEFAULT_MECHANISM,
        ca_file=os.environ.get(CA_FILE_ENV) or None,
    )


def security_config() -> dict[str, Any]:
    """The authentication settings every client gets (empty without credentials)."""
    creds = _ACTIVE[-1] if _ACTIVE else credentials_from_env()
    return creds.config() if creds is not None else {}


@contextlib.contextmanager
def use_credentials(creds: Credentials | None) -> Iterator[None]:
    """Clients made in this block authenticate as ``creds`` (None: no change)."""
    if creds is None:
        yield
        return
    _ACTIVE.append(creds)
    try:
        yield
    finally:
        _ACTIVE.pop()


_LOG_LEVEL = [3]
"""librdkafka's log level (syslog's: 3 errors, such as each failed connection attempt)."""


def quiet_clients() -> None:
    """Clients made from now on log only critical conditions: a command-line tool says in
    one line that the broker is unreachable, not in one line per connection attempt (D36)."""
    _LOG_LEVEL[0] = 2


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """An idempotent, ``acks=all`` producer that keeps per-partition order on retries."""
    config: dict[str, Any] = {
        **security_config(),
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "max.in.flight.requests.per.connection": 5,
        "message.max.bytes": MAX_MESSAGE_BYTES + 64 * 1024,
        "linger.ms": 5,
        "compression.type": "lz4",
        "log_level": _LOG_LEVEL[0],
    }
    config.update(overrides)
    return config


def consumer_config(bootstrap_servers: str, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer that reads only committed data, from the start, without auto-commit."""
    config: dict[str, Any] = {
        **security_config(),
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        # Long polling: the broker answers a fetch as soon as one byte is there, so the wait
        # only bounds how often an idle consumer asks again. Short waits cost the broker
        # about a millisecond of CPU per empty fetch (4 idle validators polling every 20 ms
        # kept it at 45% of a core, measured with bench.consensus's CPU accounting).
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 500,
        "log_level": _LOG_LEVEL[0],
    }
    config.update(overrides)
    return config


def consume_ready(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages`` messages: those already fetched at once, else the first to come
    within ``timeout`` and whatever has arrived with it.

    ``Consumer.consume(n, timeout)`` waits until ``n`` messages are there or the timeout ends,
    so under a steady trickle every batch waited the full timeout (a projector 3 to 5 blocks
    behind finality at half the consensus benchmark's load); catching up still gets full
    batches, from what librdkafka has prefetched.
    """
    ready = consumer.consume(num_messages=max_messages, timeout=0)
    if ready:
        return ready
    first = consumer.consume(num_messages=1, timeout=timeout)
    if not first or max_messages == 1:
        return first
    return first + consumer.consume(num_messages=max_messages - 1, timeout=0)


def admin_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """An admin client."""
    return {
        **security_config(),
        "bootstrap.servers": bootstrap_servers,
        "log_level": _LOG_LEVEL[0],
        **overrides,
    }

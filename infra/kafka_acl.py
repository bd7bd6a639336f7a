"""Broker access control of the local stack: SCRAM principals and their ACLs (D26).

Opt-in (``pantheon up --kafka-auth`` or ``PANTHEON_KAFKA_AUTH=scram``); once a stack's Kafka
state was formatted with it, it stays on for that state directory. Then:

* the brokers' client listener speaks SASL_PLAINTEXT with SCRAM-SHA-512, the standard KRaft
  authorizer decides every request, and nothing is allowed without an ACL;
* ``admin`` is the one super user (the brokers themselves and ``pantheon up``);
* per institution ``X`` two principals, ``operator.X`` (its validator) and ``institution.X``
  (its gateway, projector and batcher), and one ``iot`` principal for device backends, each
  with the least ACLs of :func:`acl_table`;
* every password is generated once into ``<state>/kafka/auth/<principal>.password`` (0600)
  and reaches a client through ``PANTHEON_KAFKA_PASSWORD_FILE``, never a command line.

Institution ids cannot contain ``.`` (:func:`runtime.topics.iam_topic`), so ``operator.X``
and ``institution.X`` never collide with each other or with ``admin`` and ``iot``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from infra.errors import StackError
from infra.settings import Settings
from runtime.kafka_config import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    USER_ENV,
    Credentials,
    admin_config,
)
from runtime.topics import iam_topic

ADMIN = "admin"
IOT = "iot"
MECHANISM = "SCRAM-SHA-512"
ITERATIONS = 8192


def operator_principal(institution: str) -> str:
    """The principal of ``institution``'s validators (block operators)."""
    return f"operator.{institution}"


def institution_principal(institution: str) -> str:
    """The principal of ``institution``'s gateway, projector and batcher."""
    return f"institution.{institution}"


def enabled(settings: Settings) -> bool:
    """Whether this stack's broker requires SASL: asked for, or its state was made so."""
    return settings.kafka_auth == "scram" or password_file(settings, ADMIN).exists()


def auth_dir(settings: Settings) -> Path:
    """Where the principals' password files are (0700)."""
    return settings.state_dir / "kafka" / "auth"


def password_file(settings: Settings, principal: str) -> Path:
    """The 0600 file holding ``principal``'s password."""
    return auth_dir(settings) / f"{principal}.password"


def password(settings: Settings, principal: str) -> str:
    """``principal``'s password, generated on first use into its 0600 file."""
    path = password_file(settings, principal)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        secret = secrets.token_urlsafe(24)  # [A-Za-z0-9_-]: safe in JAAS and format args
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
    return path.read_text().strip()


def credentials(settings: Settings, principal: str) -> Credentials | None:
    """``principal``'s credentials for an in-process client (None when auth is off)."""
    if not enabled(settings):
        return None
    password(settings, principal)
    return Credentials(user=principal, password_file=password_file(settings, principal))


def client_env(settings: Settings, principal: str) -> dict[str, str]:
    """Environment that makes a spawned process authenticate as ``principal`` (empty when
    auth is off). Merge it over ``os.environ``; it names a file, never the password."""
    if not enabled(settings):
        return {}
    password(settings, principal)
    return {USER_ENV: principal, PASSWORD_FILE_ENV: str(password_file(settings, principal))}


def child_env(settings: Settings, principal: str, base: dict[str, str]) -> dict[str, str]:
    """``base`` with ``principal``'s credentials (and no inherited plain password)."""
    extra = client_env(settings, principal)
    if not extra:
        return base
    return {**{k: v for k, v in base.items() if k != PASSWORD_ENV}, **extra}


# -- the ACL set ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """One ALLOW ACL: ``principal`` may ``operation`` the resource (from any host)."""

    principal: str
    resource: str  # "topic" or "group"
    name: str
    operation: str  # "READ", "WRITE"
    prefixed: bool = False

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType.TOPIC if self.resource == "topic" else ResourceType.GROUP,
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            f"User:{self.principal}",
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )


def acl_table(institutions: Sequence[str], prefix: str) -> list[Grant]:
    """Every ACL of the local consortium (READ and WRITE imply DESCRIBE; a WRITE on any topic
    allows an idempotent producer's InitProducerId, KIP-679)."""
    t = {s: f"{prefix}{s}" for s in ("tx", "votes", "blocks", "receipts")}
    feeds = f"{prefix}feeds"  # between one institution's operators only (D52)
    records, rejected = f"{prefix}l2.records", f"{prefix}l2.rejected"
    grants: list[Grant] = []
    for inst in institutions:
        op, me = operator_principal(inst), institution_principal(inst)
        iam = iam_topic(inst).name(prefix)
        grants += [
            # the validator: reads transactions and votes (and block copies, to see whether
            # its institution's first-ranked operator publishes, D38); writes votes, blocks,
            # receipts, and its markers and evidence to tx
            Grant(op, "topic", t["tx"], "READ"),
            Grant(op, "topic", t["tx"], "WRITE"),
            Grant(op, "topic", t["votes"], "READ"),
            Grant(op, "topic", t["votes"], "WRITE"),
            Grant(op, "topic", t["blocks"], "READ"),
            Grant(op, "topic", t["blocks"], "WRITE"),
            Grant(op, "topic", t["receipts"], "WRITE"),
            # a primary's executed blocks for its standbys, checked against final hashes
            Grant(op, "topic", feeds, "READ"),
            Grant(op, "topic", feeds, "WRITE"),
            Grant(op, "group", f"validator-{inst}-", "READ", prefixed=True),
            # gateway, projector, batcher: submit transactions, write the own IAM topic and
            # the batcher's rejections; read the shared ledger topics and the own IAM topic
            Grant(me, "topic", t["tx"], "WRITE"),
            Grant(me, "topic", iam, "WRITE"),
            Grant(me, "topic", rejected, "WRITE"),
            *(Grant(me, "topic", name, "READ") for name in (*t.values(), records, rejected)),
            Grant(me, "topic", iam, "READ"),
            Grant(me, "group", f"pantheon-batcher-{inst}", "READ"),
            Grant(me, "group", "projection-", "READ", prefixed=True),
            Grant(me, "group", "pantheon-sdk-receipts-", "READ", prefixed=True),
            Grant(me, "group", "audit-", "READ", prefixed=True),
        ]
    # device backends: submit transactions and device records, nothing else
    grants += [Grant(IOT, "topic", t["tx"], "WRITE"), Grant(IOT, "topic", records, "WRITE")]
    return grants


def principals(institutions: Iterable[str]) -> list[str]:
    """Every non-admin principal of the local consortium."""
    out = [IOT]
    for inst in institutions:
        out += [operator_principal(inst), institution_principal(inst)]
    return out


def ensure(
    admin: Any, settings: Settings, institutions: Sequence[str], *, timeout: float = 30.0
) -> None:
    """Create (or refresh) every principal's SCRAM credential and every ACL; idempotent.

    ``admin`` is an ``AdminClient`` authenticated as the super user.
    """
    names = principals(institutions)
    upserts = [
        UserScramCredentialUpsertion(
            name,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS),
            password(settings, name).encode(),
        )
        for name in names
    ]
    try:
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout).values():
            future.result()
        bindings = [g.binding() for g in acl_table(institutions, settings.topic_prefix)]
        for future in admin.create_acls(bindings, request_timeout=timeout).values():
            future.result()
    except KafkaException as exc:
        raise StackError(f"creating Kafka principals and ACLs failed: {exc}") from exc
    wait_effective(settings, institutions, timeout=timeout)


def wait_effective(settings: Settings, institutions: Sequence[str], *, timeout: float) -> None:
    """Wait until each broker lets the last-made principals see their topics.

    Credentials and ACLs reach the brokers' authorizers through the metadata log, a moment
    after the controller accepted them; a process started before then is refused (a
    projector refused its topics' metadata exits). Records apply in order, so the last
    principal and grant stand for the rest.
    """
    prefix = settings.topic_prefix
    probes = [(IOT, f"{prefix}l2.records")]
    if institutions:
        last = institutions[-1]
        probes.append((institution_principal(last), iam_topic(last).name(prefix)))
        probes.append((operator_principal(last), f"{prefix}votes"))
    deadline = time.monotonic() + timeout
    for port, _ in settings.kafka_ports:
        for principal, topic in probes:
            creds = credentials(settings, principal)
            assert creds is not None
            config = admin_config(f"{settings.host}:{port}", **creds.config(), log_level=0)
            while not _sees(AdminClient(config), topic):
                if time.monotonic() > deadline:
                    raise StackError(
                        f"{principal} cannot see {topic} on port {port} after {timeout:.0f}s"
                    )
                time.sleep(0.2)


def _sees(admin: Any, topic: str) -> bool:
    try:
        meta = admin.list_topics(topic, timeout=5).topics.get(topic)
    except KafkaException:
        return False
    return meta is not None and meta.error is None

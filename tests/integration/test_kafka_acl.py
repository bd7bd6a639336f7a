"""Broker access control (D26): SASL/SCRAM principals and the KRaft authorizer's ACLs.

A private secure 3-node cluster is started for this module (brokers replicate over SCRAM,
controllers vote over PLAIN; the single-node case runs in test_kafka_acl_stack.py):
unauthenticated clients and wrong passwords are refused, each principal can do what
:func:`infra.kafka_acl.acl_table` allows and nothing else, and no password reaches a log or a
command line.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from harness.stack_fixtures import private_settings
from infra import kafka_acl
from infra.kafka_server import KafkaCluster
from infra.settings import Settings
from runtime.kafka_config import (
    PASSWORD_FILE_ENV,
    USER_ENV,
    Credentials,
    admin_config,
    consumer_config,
    producer_config,
    use_credentials,
)
from runtime.topics import ensure_topics

pytestmark = pytest.mark.integration

INSTITUTIONS = ("alpha", "beta")


@pytest.fixture(scope="module")
def secure() -> Iterator[Settings]:
    """A running secure cluster with the ledger topics, principals and ACLs of alpha, beta."""
    settings = private_settings(brokers=3).with_changes(kafka_auth="scram")
    cluster = KafkaCluster(settings)
    try:
        cluster.start(timeout=120)
        with use_credentials(kafka_acl.credentials(settings, kafka_acl.ADMIN)):
            admin = AdminClient(admin_config(settings.bootstrap_servers))
            ensure_topics(admin, prefix=settings.topic_prefix, institutions=INSTITUTIONS)
            kafka_acl.ensure(admin, settings, INSTITUTIONS)
        yield settings
    finally:
        cluster.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (USER_ENV, PASSWORD_FILE_ENV, "PANTHEON_KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _auth(settings: Settings, principal: str) -> dict[str, Any]:
    creds = kafka_acl.credentials(settings, principal)
    assert creds is not None
    return creds.config()


def _produce(settings: Settings, auth: dict[str, Any], topic: str) -> KafkaError | None:
    """Produce one record as ``auth``; the delivery error (None when it was written)."""
    result: list[KafkaError | None] = []
    producer = Producer(
        producer_config(settings.bootstrap_servers, **auth, **{"message.timeout.ms": 15000})
    )
    producer.produce(topic, value=b"probe", on_delivery=lambda err, _msg: result.append(err))
    producer.flush(20)
    assert result, "no delivery report"
    return result[0]


def _denied(err: KafkaError | None) -> bool:
    return err is not None and err.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    )


def _topic(settings: Settings, suffix: str) -> str:
    return f"{settings.topic_prefix}{suffix}"


def test_unauthenticated_and_wrong_password_clients_are_refused(secure: Settings) -> None:
    bootstrap = secure.bootstrap_servers
    with pytest.raises(KafkaException):  # plaintext client on a SASL listener
        AdminClient(admin_config(bootstrap)).list_topics(timeout=5)

    wrong = Credentials(user=kafka_acl.institution_principal("beta"), password="not-it")
    unknown = Credentials(user="mallory", password="guess")
    for creds in (wrong, unknown):
        errors: list[KafkaError] = []
        config = admin_config(bootstrap, **creds.config(), error_cb=errors.append, log_level=0)
        client = AdminClient(config)
        with pytest.raises(KafkaException):
            client.list_topics(timeout=3)
        client.poll(1)  # serves the error callback
        assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_each_principal_writes_only_what_its_acls_allow(secure: Settings) -> None:
    admin = AdminClient(admin_config(secure.bootstrap_servers, **_auth(secure, kafka_acl.ADMIN)))
    topic = admin.list_topics(timeout=10).topics[_topic(secure, "iam.alpha")]
    assert all(len(p.replicas) == 3 for p in topic.partitions.values())
    beta = _auth(secure, kafka_acl.institution_principal("beta"))
    alpha_op = _auth(secure, kafka_acl.operator_principal("alpha"))
    iot = _auth(secure, kafka_acl.IOT)
    iam_alpha, iam_beta = _topic(secure, "iam.alpha"), _topic(secure, "iam.beta")

    # permitted
    assert _produce(secure, beta, iam_beta) is None
    assert _produce(secure, beta, _topic(secure, "tx")) is None
    for suffix in ("votes", "blocks", "receipts"):
        assert _produce(secure, alpha_op, _topic(secure, suffix)) is None
    assert _produce(secure, iot, _topic(secure, "l2.records")) is None
    assert _produce(secure, iot, _topic(secure, "tx")) is None

    # refused: another institution's IAM topic, the operators' topics, anything for devices
    err = _produce(secure, beta, iam_alpha)
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    for suffix in ("votes", "blocks", "receipts"):
        assert _denied(_produce(secure, beta, _topic(secure, suffix))), suffix
        assert _denied(_produce(secure, iot, _topic(secure, suffix))), suffix
    assert _denied(_produce(secure, alpha_op, iam_alpha))  # operators do not manage users
    assert _denied(_produce(secure, iot, iam_beta))


def test_reads_are_limited_to_the_ledger_and_the_own_iam_topic(secure: Settings) -> None:
    admin = _auth(secure, kafka_acl.ADMIN)
    for suffix in ("iam.alpha", "iam.beta", "tx"):
        assert _produce(secure, admin, _topic(secure, suffix)) is None

    def first_message(auth: dict[str, Any], topic: str) -> bytes | None:
        group = f"projection-{uuid.uuid4().hex[:8]}"
        consumer = Consumer(consumer_config(secure.bootstrap_servers, group, **auth))
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                assert meta.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, meta.error
                return None
            consumer.assign([TopicPartition(topic, 0, 0)])
            msg = consumer.poll(10)
            assert msg is not None
            if msg.error() is not None:  # a write-only principal sees the topic, not its data
                assert _denied(msg.error()), msg.error()
                return None
            return msg.value()
        finally:
            consumer.close()

    beta = _auth(secure, kafka_acl.institution_principal("beta"))
    assert first_message(beta, _topic(secure, "iam.beta")) is not None
    assert first_message(beta, _topic(secure, "tx")) is not None
    assert first_message(beta, _topic(secure, "iam.alpha")) is None
    iot = _auth(secure, kafka_acl.IOT)
    assert first_message(iot, _topic(secure, "tx")) is None
    assert first_message(iot, _topic(secure, "iam.beta")) is None


def test_passwords_stay_in_owner_only_files(secure: Settings) -> None:
    auth = kafka_acl.auth_dir(secure)
    assert stat.S_IMODE(auth.stat().st_mode) == 0o700
    files = sorted(auth.iterdir())
    assert {f.name for f in files} >= {"admin.password", "operator.alpha.password", "iot.password"}
    secrets = [f.read_text().strip() for f in files]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    for node in KafkaCluster(secure).nodes:
        assert stat.S_IMODE((node.home / "server.properties").stat().st_mode) == 0o600
        assert not (node.home / "format.args").exists()
        for log in (node.log_file, node.home / "stdout.log"):
            text = log.read_text(errors="replace")
            assert not any(s in text for s in secrets), log
        pid = int(node.pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert not any(s in cmdline for s in secrets)


def test_clients_take_credentials_from_the_environment(
    secure: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = kafka_acl.client_env(secure, kafka_acl.institution_principal("beta"))
    assert set(env) == {USER_ENV, PASSWORD_FILE_ENV}
    assert all(kafka_acl.password(secure, "iot") not in v for v in env.values())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _produce(secure, {}, _topic(secure, "iam.beta")) is None
    assert _denied(_produce(secure, {}, _topic(secure, "iam.alpha")))
    assert os.environ[USER_ENV] == "institution.beta"

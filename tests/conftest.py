"""Session-scoped fixtures that start the real Kafka broker, PostgreSQL and Prometheus.

Each server is started lazily, the first time a test asks for it, and stopped when the
session ends. Tests isolate themselves by topic names, consumer groups and databases.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from infra.prometheus_server import Prometheus
from infra.settings import Settings
from tests.stack_fixtures import private_settings


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Ports and state directory of the session's private stack."""
    settings = private_settings()
    yield settings
    shutil.rmtree(settings.state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka(stack_settings: Settings) -> Iterator[KafkaCluster]:
    """A running single-node KRaft cluster."""
    cluster = KafkaCluster(stack_settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka: KafkaCluster) -> str:
    """``bootstrap.servers`` of the running cluster."""
    return kafka.settings.bootstrap_servers


@pytest.fixture(scope="session")
def postgres(stack_settings: Settings) -> Iterator[Postgres]:
    """A running project-local PostgreSQL."""
    server = Postgres(stack_settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus(stack_settings: Settings) -> Iterator[Prometheus]:
    """A running project-local Prometheus."""
    server = Prometheus(stack_settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names."""
    return uuid.uuid4().hex[:10]

"""Session-scoped fixtures that start the real Kafka broker, PostgreSQL and Prometheus.

Each server is started lazily, the first time a test asks for it, and stopped when the
session ends. Tests isolate themselves by topic names, consumer groups and databases.
"""

from __future__ import annotations

import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from harness.stack_fixtures import private_settings
from infra.errors import PortTakenError
from infra.kafka_server import KafkaCluster
from infra.postgres_server import Postgres
from infra.procs import free_port, free_port_block
from infra.prometheus_server import Prometheus
from infra.settings import Settings

if TYPE_CHECKING:  # imported when the fixture runs: the unit tier never needs the gateway
    from harness.gateway_support import ChainFixture

T = TypeVar("T")

# A suite started in the background by a non-interactive shell (`cmd &`, nohup) inherits
# SIGINT ignored, and so would every command a test starts: the tests that interrupt `up`
# or `explorer` as Ctrl-C does would then see no interruption at all. Python gives a
# child the default disposition when this process has a handler of its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    """Ports and state directory of the session's private stack."""
    settings = private_settings()
    yield settings
    shutil.rmtree(settings.state_dir, ignore_errors=True)


def _start(make: Callable[[int], T], start: Callable[[T], None]) -> T:
    """Start a server on a fresh port; if another process took the port in the meantime,
    try again with another one (a test run shares the machine with other programs)."""
    for attempt in range(3):
        server = make(attempt)
        try:
            start(server)
            return server
        except PortTakenError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def kafka(stack_settings: Settings) -> Iterator[KafkaCluster]:
    """A running single-node KRaft cluster."""
    cluster = _start(
        lambda n: KafkaCluster(
            stack_settings if n == 0 else stack_settings.with_changes(kafka_port=free_port_block(2))
        ),
        lambda c: c.start(),
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def bootstrap(kafka: KafkaCluster) -> str:
    """``bootstrap.servers`` of the running cluster."""
    return kafka.settings.bootstrap_servers


NOT_DURABLE = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")
"""Server settings of the session's PostgreSQL only: no test kills that server or its
machine, so flushing to disk buys nothing but waiting. The servers ``pantheon up`` starts
(the CLI and stack tests) keep the durable defaults."""


@pytest.fixture(scope="session")
def postgres(stack_settings: Settings) -> Iterator[Postgres]:
    """A running project-local PostgreSQL (test-only settings: :data:`NOT_DURABLE`)."""
    server = _start(
        lambda n: Postgres(
            stack_settings if n == 0 else stack_settings.with_changes(pg_port=free_port()),
            server_options=NOT_DURABLE,
        ),
        lambda p: p.start(),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus(stack_settings: Settings) -> Iterator[Prometheus]:
    """A running project-local Prometheus; it scrapes, evaluates its rules and re-reads its
    targets every second (``pantheon up``'s: every 5 s), so the alert tests wait less."""
    server = _start(
        lambda n: Prometheus(
            stack_settings if n == 0 else stack_settings.with_changes(prom_port=free_port()),
            interval="1s",
        ),
        lambda p: p.start(),
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def chain(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChainFixture]:
    """One module's chain on the real broker, projected into its own database
    (:class:`harness.gateway_support.ChainFixture`), closed when the module ends."""
    from harness.gateway_support import ChainFixture  # noqa: PLC0415 (see TYPE_CHECKING)

    fixture = ChainFixture(bootstrap, postgres.dsn("postgres"), tmp_path_factory.mktemp("chain"))
    yield fixture
    fixture.close()

"""Where the local stack keeps its state, its caches, and which loopback ports it uses.

Every value has a sane default and can be overridden by an environment variable, so
tests (and two stacks on one machine) never collide:

============================  ==============================  ===========================
variable                      default                         what
============================  ==============================  ===========================
``PANTHEON_STATE_DIR``        ``<checkout>/.pantheon``        data of Kafka/Postgres/...
``PANTHEON_CACHE_DIR``        ``~/.cache/pantheon``           Kafka jars (shared, reused)
``PANTHEON_KAFKA_VERSION``    :data:`KAFKA_VERSION`           broker release to fetch
``PANTHEON_KAFKA_PORT``       19092 (controller: port + 1)    broker listener
``PANTHEON_PG_PORT``          15432                           PostgreSQL
``PANTHEON_PROM_PORT``        19090                           Prometheus
``PANTHEON_GATEWAY_PORT``     4004 (then 4005, ...)           first institution's gateway
``PANTHEON_GATEWAY_WORKERS``  1                               worker processes per gateway
``PANTHEON_TOPIC_PREFIX``     ``pantheon.``                   prefix of every topic
``PANTHEON_KAFKA_AUTH``       (empty: plaintext)              ``scram``: SASL + ACLs (D26)
============================  ==============================  ===========================

``pantheon up`` records th  e settings it used in ``<state>/stack.json`` (:data:`RECORD`), and
every later command reads   them from there, so that a new shell needs no variable but
``PANTHEON_STATE_DIR`` (an  d not even that for the checkout's own ``.pantheon``). A variable set
in the environment still w  ins, except the number of Kafka nodes: that is a property of the
cluster on disk, so ``down  `` and ``status`` see every node ``up`` started (D36).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.4.0"
"""The Apache Kafka release we run; see docs/decisions.md (D1) for why this one."""

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent

RECORD = "stack.json"
"""The file in the state directory where ``up`` records the stack's settings."""

_RECORDED = {
    "PANTHEON_KAFKA_PORT": "kafka_port",
    "PANTHEON_KAFKA_BROKERS": "kafka_brokers",
    "PANTHEON_PG_PORT": "pg_port",
    "PANTHEON_PROM_PORT": "prom_port",
    "PANTHEON_GATEWAY_PORT": "gateway_port",
    "PANTHEON_GATEWAY_WORKERS": "gateway_workers",
    "PANTHEON_TOPIC_PREFIX": "topic_prefix",
    "PANTHEON_KAFKA_AUTH": "kafka_auth",
}


def default_state_dir() -> Path:
    """The state directory when ``PANTHEON_STATE_DIR`` is not set."""
    # A source checkout keeps its state beside the code (ignored by git); an installed
    # distribution keeps it in the user's state directory.
    if (_PACKAGE_ROOT / "pyproject.toml").exists():
        return _PACKAGE_ROOT / ".pantheon"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pantheon"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pantheon"


def _recorded(state_dir: Path) -> dict[str, Any]:
    """What ``up`` recorded in ``state_dir`` (empty before the first ``up``)."""
    try:
        doc = json.loads((state_dir / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a port number") from exc
    if not 0 < value < 65536:
        raise ValueError(f"{name}={value} is outside 1..65535")
    return value


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= 64:
        raise ValueError(f"{name}={raw!r} is not a count from 1 to 64")
    return int(raw)


def _env_auth(name: str) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "none", "plaintext"):
        return ""
    if raw != "scram":
        raise ValueError(f"{name}={raw!r}: use 'scram' (SASL/SCRAM with ACLs) or leave it empty")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Locations and ports of one local stack."""

    state_dir: Path
    cache_dir: Path
    kafka_version: str
    kafka_port: int
    kafka_brokers: int
    pg_port: int
    prom_port: int
    topic_prefix: str
    gateway_port: int = 4004
    #: worker processes of each gateway (``pantheon gateway --workers``; decisions D46)
    gateway_workers: int = 1
    host: str = "127.0.0.1"
    kafka_auth: str = ""
    """``"scram"``: the broker requires SASL/SCRAM and ACLs (``pantheon up --kafka-auth``)."""

    @classmethod
    def from_env(cls) -> Settings:
        """Defaults, then what ``up`` recorded in the state directory, overridden by the
        ``PANTHEON_*`` environment variables (the node count excepted: see the module)."""
        state_dir = Path(os.environ.get("PANTHEON_STATE_DIR") or default_state_dir())
        recorded = _recorded(state_dir)

        def rec(name: str, default: Any) -> Any:
            value = recorded.get(_RECORDED[name], default)
            return value if isinstance(value, type(default)) else default

        brokers = recorded.get("kafka_brokers")
        return cls(
            state_dir=state_dir,
            cache_dir=Path(os.environ.get("PANTHEON_CACHE_DIR") or _default_cache_dir()),
            kafka_version=os.environ.get("PANTHEON_KAFKA_VERSION") or KAFKA_VERSION,
            kafka_port=_env_int("PANTHEON_KAFKA_PORT", rec("PANTHEON_KAFKA_PORT", 19092)),
            kafka_brokers=brokers
            if isinstance(brokers, int) and brokers > 0
            else _env_int("PANTHEON_KAFKA_BROKERS", 1),
            pg_port=_env_int("PANTHEON_PG_PORT", rec("PANTHEON_PG_PORT", 15432)),
            prom_port=_env_int("PANTHEON_PROM_PORT", rec("PANTHEON_PROM_PORT", 19090)),
            gateway_port=_env_int("PANTHEON_GATEWAY_PORT", rec("PANTHEON_GATEWAY_PORT", 4004)),
            gateway_workers=_env_count(
                "PANTHEON_GATEWAY_WORKERS", rec("PANTHEON_GATEWAY_WORKERS", 1)
            ),
            topic_prefix=os.environ.get(
                "PANTHEON_TOPIC_PREFIX", rec("PANTHEON_TOPIC_PREFIX", "pantheon.")
            ),
            kafka_auth=_env_auth("PANTHEON_KAFKA_AUTH") or rec("PANTHEON_KAFKA_AUTH", ""),
        )

    def record(self) -> None:
        """Write these settings to ``<state>/stack.json`` (``up`` does, every time)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        doc = {field: getattr(self, field) for field in _RECORDED.values()}
        path = self.state_dir / RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(path)

    def with_changes(self, **changes: object) -> Settings:
        """A copy with some fields replaced (used by tests for private stacks)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def kafka_ports(self) -> list[tuple[int, int]]:
        """(broker port, controller port) for each broker: consecutive pairs."""
        return [
            (self.kafka_port + 2 * i, self.kafka_port + 2 * i + 1)
            for i in range(self.kafka_brokers)
        ]

    @property
    def bootstrap_servers(self) -> str:
        """The ``bootstrap.servers`` string of the local cluster."""
        return ",".join(f"{self.host}:{port}" for port, _ in self.kafka_ports)

    @property
    def kafka_dist_dir(self) -> Path:
        """Directory holding the broker's jars (outside git, shared between clones)."""
        return self.cache_dir / f"kafka-{self.kafka_version}"

    @property
    def pg_dsn(self) -> str:
        """A libpq connection string for the project's database (password from the file)."""
        return f"host={self.host} port={self.pg_port} user=pantheon dbname=pantheon"


DEFAULT_INSTITUTIONS = ("alpha", "beta", "gamma", "delta")


def institutions_from_env() -> tuple[str, ...]:
    """Founding institutions of a new local consortium."""
    raw = os.environ.get("PANTHEON_INSTITUTIONS", "")
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    return names or DEFAULT_INSTITUTIONS


def audit_every() -> float:
    """Seconds between two runs of an institution's continuous auditor
    (``PANTHEON_AUDIT_EVERY``, default 60)."""
    raw = os.environ.get("PANTHEON_AUDIT_EVERY", "")
    try:
        return max(1.0, float(raw)) if raw else 60.0
    except ValueError as exc:
        raise ValueError(f"PANTHEON_AUDIT_EVERY={raw!r} is not a number of seconds") from exc

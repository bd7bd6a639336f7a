"""The command lines of the local consortium's validator and gateway processes.

:class:`infra.consortium.Consortium` spawns them; the arguments are the stack's (brokers,
topic prefix, PostgreSQL server) and the institution's files under the consortium's home
(genesis, keystore, IAM keys). Secrets are never on a command line: the database password
and the Kafka credentials travel in the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from infra.settings import Settings


def validator_argv(
    settings: Settings,
    consortium_home: Path,
    institution: str,
    *,
    operator: int,
    state_dir: Path,
    metrics_port: int,
) -> list[str]:
    """``python -m streams.validator`` for one operator of ``institution``."""
    return [
        sys.executable,
        "-m",
        "streams.validator",
        "--genesis",
        str(consortium_home / "genesis.avro"),
        "--keystore",
        str(consortium_home / "keys" / f"{institution}.json"),
        "--institution",
        institution,
        "--operator",
        str(operator),
        "--bootstrap",
        settings.bootstrap_servers,
        "--prefix",
        settings.topic_prefix,
        "--state-dir",
        str(state_dir),
        "--metrics-port",
        str(metrics_port),
    ]


def gateway_argv(
    settings: Settings,
    consortium_home: Path,
    institution: str,
    *,
    port: int,
    master_key_file: Path,
    iam_key_file: Path,
) -> list[str]:
    """``python -m gateway.server`` of ``institution`` on ``port``."""
    server = f"host={settings.host} port={settings.pg_port} user=pantheon"
    return [
        sys.executable,
        "-m",
        "gateway.server",
        "--institution",
        institution,
        "--dsn",
        server,
        "--bootstrap",
        settings.bootstrap_servers,
        "--prefix",
        settings.topic_prefix,
        "--host",
        settings.host,
        "--port",
        str(port),
        "--master-key-file",
        str(master_key_file),
        "--iam-key-file",
        str(iam_key_file),
        "--keystore",
        str(consortium_home / "keys" / f"{institution}.json"),
        "--genesis",
        str(consortium_home / "genesis.avro"),
        "--workers",
        str(settings.gateway_workers),
    ]

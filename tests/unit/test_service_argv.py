"""``infra.service_argv``: the local validators' and gateways' command lines."""

from __future__ import annotations

from pathlib import Path

from infra.service_argv import gateway_argv, validator_argv
from infra.settings import Settings


def options(argv: list[str]) -> dict[str, str]:
    """``--name value`` pairs after ``python -m module``."""
    rest = argv[3:]
    assert all(name.startswith("--") for name in rest[::2])
    return dict(zip(rest[::2], rest[1::2], strict=True))


def test_a_validator_gets_its_operator_state_and_the_institution_files(tmp_path: Path) -> None:
    settings = Settings.from_env().with_changes(state_dir=tmp_path)
    argv = validator_argv(
        settings, tmp_path, "beta", operator=2, state_dir=tmp_path / "v", metrics_port=9100
    )
    assert argv[1:3] == ["-m", "streams.validator"]
    assert options(argv) == {
        "--genesis": str(tmp_path / "genesis.avro"),
        "--keystore": str(tmp_path / "keys" / "beta.json"),
        "--institution": "beta",
        "--operator": "2",
        "--bootstrap": settings.bootstrap_servers,
        "--prefix": settings.topic_prefix,
        "--state-dir": str(tmp_path / "v"),
        "--metrics-port": "9100",
    }


def test_a_gateway_gets_no_password_on_its_command_line(tmp_path: Path) -> None:
    settings = Settings.from_env().with_changes(state_dir=tmp_path)
    argv = gateway_argv(
        settings,
        tmp_path,
        "alpha",
        port=4004,
        master_key_file=tmp_path / "m.key",
        iam_key_file=tmp_path / "i.json",
    )
    found = options(argv)
    assert argv[1:3] == ["-m", "gateway.server"]
    assert found["--dsn"] == f"host={settings.host} port={settings.pg_port} user=pantheon"
    assert found["--port"] == "4004" and found["--genesis"] == str(tmp_path / "genesis.avro")
    assert found["--master-key-file"] == str(tmp_path / "m.key")
    assert not any("password" in part.lower() for part in argv)

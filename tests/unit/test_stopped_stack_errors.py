"""On a stopped stack, commands fail at once in one line with exit 2 (D36, D60)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from gateway.auth.crypto import create_master_key_file
from infra.cli import main
from infra.consortium import Consortium
from infra.keystore import generate_key
from infra.postgres_server import Postgres
from infra.settings import Settings
from infra.simulate import runner
from runtime.cli_args import one_line
from streams.receipts import ReceiptWatcher


@pytest.fixture
def stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A state directory with nothing running (ports nobody listens on)."""
    monkeypatch.setenv("PANTHEON_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("PANTHEON_KAFKA_PORT", "1")
    monkeypatch.setenv("PANTHEON_PG_PORT", "3")
    return tmp_path


@pytest.mark.parametrize("verb", ["start", "restart"])
def test_starting_a_member_without_the_servers_says_so_at_once(
    stopped: Path, capsys: pytest.CaptureFixture[str], verb: str
) -> None:
    assert main([verb, "gateway", "--institution", "alpha"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "cannot start the gateway: kafka and postgres not running; start the stack with" in err


def test_simulate_that_cannot_run_exits_2(
    stopped: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pantheon simulate: error: "), err


def test_simulate_on_a_stopped_broker_says_so_in_one_line(
    stopped: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consortium exists but its broker does not answer: the SDK's error, with Kafka's
    text rather than ``KafkaError{...}`` (D60), where Kafka should be, exit 2. (The real
    watcher, giving up on the broker after 0.5 s instead of 10 s.)"""
    Consortium(Settings.from_env()).ensure_genesis()
    monkeypatch.setattr(runner, "ReceiptWatcher", partial(ReceiptWatcher, timeout=0.5))
    assert main(["simulate", "--seconds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("pantheon simulate: error: cannot read pantheon.blocks: "), err
    assert "KafkaError{" not in err and "(Kafka at 127.0.0.1:1; `" in err, err


def files(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file below ``root``: its mode and bytes, by relative path."""
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "verb", [["shred-forgotten"], ["forget-user", "--user", "u-1", "--yes"]], ids=lambda v: v[0]
)
def test_iam_commands_on_a_stopped_stack_say_so_and_change_nothing(
    stopped: Path, capsys: pytest.CaptureFixture[str], verb: list[str]
) -> None:
    """A consortium with its institution's IAM and master keys and the database's password
    (what `up` leaves), its database not running: one line naming PostgreSQL and `status`,
    exit 2, every file of the state as it was (forgetting rotates the key-encryption key, so
    it must stop before)."""
    settings = Settings.from_env()
    Postgres(settings).password()
    consortium = Consortium(settings)
    institution = consortium.ensure_genesis()[0]
    generate_key(consortium.iam_key_file(institution))
    create_master_key_file(consortium.master_key_file(institution))
    before = files(stopped)
    assert main(["iam", *verb, "--institution", institution]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("pantheon: error: cannot reach PostgreSQL ("), err
    assert "is the stack up? `" in err and "status`" in err, err
    assert files(stopped) == before


def test_a_kafka_error_is_its_text_not_its_repr() -> None:
    error = KafkaError(KafkaError._ALL_BROKERS_DOWN, "All broker connections are down")
    down = KafkaException(error)
    assert one_line(down) == "All broker connections are down"
    assert one_line(ValueError("a\n\tb\nc")) == "a; b"

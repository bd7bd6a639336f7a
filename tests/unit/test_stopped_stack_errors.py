"""On a stopped stack, commands fail at once in one line with exit 2 (D36, D60)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from infra.cli import main
from runtime.cli_args import one_line


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


def test_a_kafka_error_is_its_text_not_its_repr() -> None:
    error = KafkaError(KafkaError._ALL_BROKERS_DOWN, "All broker connections are down")
    down = KafkaException(error)
    assert one_line(down) == "All broker connections are down"
    assert one_line(ValueError("a\n\tb\nc")) == "a; b"

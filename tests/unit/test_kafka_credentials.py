"""Broker access control (D26) without a broker: client credentials, the flag, the ACL set."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.cli import build_parser
from infra.cli_stack import settings_of
from infra.errors import StackError
from infra.kafka_acl import acl_table
from infra.kafka_server import KafkaCluster
from infra.settings import Settings
from runtime.kafka_config import (
    PASSWORD_FILE_ENV,
    USER_ENV,
    CredentialError,
    Credentials,
    admin_config,
    consumer_config,
    producer_config,
    use_credentials,
)


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (USER_ENV, PASSWORD_FILE_ENV, "PANTHEON_KAFKA_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def _secret(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "p.password"
    path.write_text("s3cret\n")
    path.chmod(mode)
    return path


def test_without_a_user_nothing_changes() -> None:
    for config in (producer_config("b:1"), consumer_config("b:1", "g"), admin_config("b:1")):
        assert not any(k.startswith(("sasl.", "security.")) for k in config)


def test_every_client_authenticates_as_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_ENV, "institution.alpha")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(_secret(tmp_path)))
    for config in (producer_config("b:1"), consumer_config("b:1", "g"), admin_config("b:1")):
        assert config["security.protocol"] == "SASL_PLAINTEXT"
        assert config["sasl.mechanism"] == "SCRAM-SHA-512"
        assert config["sasl.username"] == "institution.alpha"
        assert config["sasl.password"] == "s3cret"


def test_a_password_file_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_ENV, "institution.alpha")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(_secret(tmp_path, 0o644)))
    with pytest.raises(CredentialError, match="chmod 600"):
        producer_config("b:1")


def test_a_scope_overrides_the_environment_and_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_ENV, "institution.alpha")
    monkeypatch.setenv("PANTHEON_KAFKA_PASSWORD", "from-env")
    with use_credentials(Credentials(user="admin", password_file=_secret(tmp_path))):
        assert admin_config("b:1")["sasl.username"] == "admin"
    assert admin_config("b:1")["sasl.username"] == "institution.alpha"
    assert admin_config("b:1")["sasl.password"] == "from-env"


def test_the_cli_flag_and_the_variable_turn_the_mode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PANTHEON_KAFKA_AUTH", raising=False)
    assert settings_of(build_parser().parse_args(["up"])).kafka_auth == ""
    assert settings_of(build_parser().parse_args(["up", "--kafka-auth"])).kafka_auth == "scram"
    monkeypatch.setenv("PANTHEON_KAFKA_AUTH", "SCRAM")
    assert Settings.from_env().kafka_auth == "scram"
    monkeypatch.setenv("PANTHEON_KAFKA_AUTH", "kerberos")
    with pytest.raises(ValueError, match="PANTHEON_KAFKA_AUTH"):
        Settings.from_env()


def test_the_acl_table_is_least_privilege() -> None:
    grants = acl_table(["alpha", "beta"], "p.")
    writes = {(g.principal, g.name) for g in grants if g.operation == "WRITE"}
    writers = {
        topic: {who for who, name in writes if name == topic}
        for topic in {name for _, name in writes}
    }
    assert writers["p.iam.alpha"] == {"institution.alpha"}
    assert writers["p.iam.beta"] == {"institution.beta"}
    for topic in ("p.votes", "p.blocks", "p.receipts", "p.feeds"):
        assert writers[topic] == {"operator.alpha", "operator.beta"}, topic
    assert writers["p.l2.records"] == {"iot"}
    assert {name for who, name in writes if who == "iot"} == {"p.tx", "p.l2.records"}
    assert not any(g.principal == "iot" and g.operation == "READ" for g in grants)
    reads = {
        (g.principal, g.name) for g in grants if g.operation == "READ" and g.resource == "topic"
    }
    assert ("institution.beta", "p.iam.alpha") not in reads
    assert {who for who, name in reads if name == "p.feeds"} == {"operator.alpha", "operator.beta"}
    assert not any(g.prefixed and g.resource == "topic" for g in grants)


def test_a_plaintext_state_is_not_silently_switched(tmp_path: Path) -> None:
    settings = Settings.from_env().with_changes(state_dir=tmp_path, kafka_auth="scram")
    cluster = KafkaCluster(settings)
    node = cluster.nodes[0]
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "meta.properties").write_text("formatted without SASL\n")
    with pytest.raises(StackError, match="formatted without --kafka-auth"):
        cluster._prepare(node, tmp_path)

"""``infra/compose/``: the multi-host deployment, checked without a Docker engine.

Every command must parse with the real argument parser of its module, every mounted path must
exist (or be a declared volume, secret or config), ports must be unique and agree with the
flags and with Prometheus' targets, the Kafka cluster must replicate 3 times with
``min.insync.replicas=2``, and the topic script must create what ``runtime/topics.py`` defines.
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import server as gateway_server
from gateway.auth.crypto import ENV_VAR as MASTER_KEY_ENV
from infra.settings import KAFKA_VERSION
from projections import projector
from readers import audit, batcher
from runtime.topics import FEEDS_CONFIG, L2_PARTITIONS, LEDGER_TOPICS, ledger_config
from streams import validator_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "infra" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "streams.validator": validator_config.build_parser,
    "projections.projector": projector.build_parser,
    "gateway.server": gateway_server.build_parser,
    "readers.batcher": batcher.build_parser,
    "readers.audit": audit.build_parser,
}
ROLES = {
    "streams.validator": "validator",
    "projections.projector": "projector",
    "gateway.server": "gateway",
    "readers.batcher": "batcher",
    "readers.audit": "auditor",
}
ENTRYPOINT_VARS = {"PGPASSWORD", MASTER_KEY_ENV}
"""Variables the image's entry point fills from ``<VAR>_FILE`` (the project reads them)."""


class ParseError(Exception):
    pass


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    def error(message: str) -> Any:
        raise ParseError(message)

    parser.error = error  # type: ignore[method-assign]
    return parser


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(doc, dict)
    return doc


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _pantheon(compose: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, Any]]:
    """(service name, service, module, parsed args) of every Pantheon process."""
    for name, svc in _services(compose).items():
        command = svc.get("command")
        if not (isinstance(command, list) and command[:2] == ["python", "-m"]):
            continue
        module = command[2]
        assert module in PARSERS, f"{name}: unknown module {module}"
        args = _strict(PARSERS[module]()).parse_args(command[3:])
        yield name, svc, module, args


def _institutions(compose: dict[str, Any]) -> list[str]:
    return sorted(
        {
            args.institution
            for _, _, module, args in _pantheon(compose)
            if module == "streams.validator"
        }
    )


def _host_ports(svc: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) of each published port."""
    out = []
    for spec in svc.get("ports", []):
        parts = str(spec).split(":")
        out.append((int(parts[-2]), int(parts[-1])))
    return out


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each short-syntax volume."""
    out = []
    for spec in svc.get("volumes", []):
        assert isinstance(spec, str), "use the short syntax source:target[:ro]"
        source, target = spec.split(":")[:2]
        out.append((source, target))
    return out


def _secret_targets(svc: dict[str, Any]) -> dict[str, str]:
    """In-container path -> secret name."""
    out = {}
    for entry in svc.get("secrets", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = f"/run/secrets/{name}" if isinstance(entry, str) else entry.get("target", name)
        out[target if target.startswith("/") else f"/run/secrets/{target}"] = name
    return out


def _config_targets(svc: dict[str, Any]) -> dict[str, str]:
    out = {}
    for entry in svc.get("configs", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = f"/{name}" if isinstance(entry, str) else entry["target"]
        out[target] = name
    return out


# -- structure --------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    for name, svc in _services(compose).items():
        assert "image" in svc or "build" in svc, name
        build = svc.get("build")
        if build is not None:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == REPO, name
            assert (context / build["dockerfile"]).is_file(), name


def test_at_least_two_institutions_each_with_all_six_services(compose: dict[str, Any]) -> None:
    services = _services(compose)
    institutions = _institutions(compose)
    assert len(institutions) >= 2
    for inst in institutions:
        for role in ("validator", "projector", "gateway", "batcher", "auditor", "postgres"):
            assert f"{role}-{inst}" in services, f"{role}-{inst} missing"
    roles = {
        (ROLES[module], args.institution): name for name, _, module, args in _pantheon(compose)
    }
    for (role, inst), name in roles.items():
        assert name == f"{role}-{inst}", f"{name} runs the {role} of {inst}"


def test_depends_on_references_exist(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else list(deps):
            assert dep in services, f"{name} depends on unknown {dep}"
            assert dep != name


def test_dockerfile_installs_the_project_on_python_311_slim() -> None:
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)
    assert "pip install ." in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    entry = COMPOSE_DIR / "entrypoint.sh"
    assert entry.stat().st_mode & 0o111
    entry_text = entry.read_text()
    for var in ENTRYPOINT_VARS:
        assert var in entry_text
    ignore = (COMPOSE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    assert "infra/compose/consortium/" in ignore, "secrets must never enter the build context"


# -- commands -------------------------------------------------------------------------------


def test_commands_parse_with_the_real_parsers(compose: dict[str, Any]) -> None:
    found = {module for _, _, module, _ in _pantheon(compose)}
    assert found == set(PARSERS)


def test_command_paths_are_mounted_secrets_configs_or_volumes(compose: dict[str, Any]) -> None:
    for name, svc, _, args in _pantheon(compose):
        secrets = _secret_targets(svc)
        configs = _config_targets(svc)
        mounts = {target for _, target in _mounts(svc)}
        genesis = getattr(args, "genesis", None)
        if genesis is not None:
            assert str(genesis) in configs, f"{name}: --genesis {genesis} is not a config"
        for attr in ("keystore", "master_key_file", "key"):
            value = getattr(args, attr, None)
            if value is not None:
                path = str(value)
                assert path in secrets, f"{name}: --{attr} {path} is not a mounted secret"
                assert secrets[path].startswith(f"{args.institution}_"), (
                    f"{name} uses another institution's secret {secrets[path]}"
                )
        state_dir = getattr(args, "state_dir", None)
        if state_dir is not None:
            assert str(state_dir) in mounts, f"{name}: --state-dir must be a volume"
        kek_dir = getattr(args, "kek_dir", None)
        if getattr(args, "master_key_file", None) is not None:  # D25: a writable volume
            assert kek_dir is not None and str(kek_dir) in mounts, f"{name}: --kek-dir volume"


def test_commands_point_at_their_own_database_and_the_brokers(compose: dict[str, Any]) -> None:
    services = _services(compose)
    brokers = {f"{n}:9092" for n in services if re.fullmatch(r"kafka-\d", n)}
    for name, svc, _, args in _pantheon(compose):
        assert set(args.bootstrap.split(",")) == brokers, name
        assert args.prefix == "pantheon."
        if hasattr(args, "dsn"):
            dsn = dict(part.split("=", 1) for part in shlex.split(args.dsn))
            assert dsn["host"] == f"postgres-{args.institution}", name
            assert "password" not in dsn, f"{name}: password inline in the DSN"
            env = svc.get("environment", {})
            assert env.get("PGPASSWORD_FILE") == f"/run/secrets/{args.institution}_pg_password"
            postgres_env = services[dsn["host"]]["environment"]
            assert postgres_env["POSTGRES_USER"] == dsn["user"]
            assert postgres_env["POSTGRES_PASSWORD_FILE"] == env["PGPASSWORD_FILE"]


# -- mounts, secrets, environment -------------------------------------------------------------


def test_mounts_exist_or_are_declared(compose: dict[str, Any]) -> None:
    volumes = set(compose.get("volumes", {}))
    secrets = compose.get("secrets", {})
    configs = compose.get("configs", {})
    for name, svc in _services(compose).items():
        for source, _ in _mounts(svc):
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} not declared"
        for secret in _secret_targets(svc).values():
            assert secret in secrets, f"{name}: secret {secret} not declared"
        for config in _config_targets(svc).values():
            assert config in configs, f"{name}: config {config} not declared"
    ignored = (COMPOSE_DIR / "consortium" / ".gitignore").read_text().splitlines()
    assert "*" in ignored
    for entry in [*secrets.values(), *configs.values()]:
        # operator-provided files live in the git-ignored consortium/ folder
        assert entry["file"].startswith("./consortium/"), entry


def test_secrets_are_never_inline(compose: dict[str, Any]) -> None:
    secret_words = re.compile(r"PASSWORD|SECRET|MASTER_KEY|TOKEN|SEED", re.I)
    for name, svc in _services(compose).items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping syntax for environment"
        for var, value in env.items():
            if secret_words.search(var):
                assert var.endswith("_FILE"), f"{name}: {var} inline"
                assert str(value).startswith("/run/secrets/"), f"{name}: {var}={value}"
        for part in svc.get("command", []) if isinstance(svc.get("command"), list) else []:
            assert "password" not in str(part).lower(), f"{name}: password on the command line"


def test_pantheon_environment_is_spelled_as_the_project_reads_it(compose: dict[str, Any]) -> None:
    sources = "".join(p.read_text() for p in (REPO / "infra" / "consortium.py",))
    assert '"PGPASSWORD"' in sources
    for name, svc, _, _ in _pantheon(compose):
        for var in svc.get("environment", {}):
            assert var.endswith("_FILE") and var.removesuffix("_FILE") in ENTRYPOINT_VARS, (
                f"{name}: {var} is not read by Pantheon"
            )


# -- ports ----------------------------------------------------------------------------------


def test_host_ports_are_unique(compose: dict[str, Any]) -> None:
    seen: dict[int, str] = {}
    for name, svc in _services(compose).items():
        for host, _ in _host_ports(svc):
            assert host not in seen, f"host port {host} of {name} also used by {seen[host]}"
            seen[host] = name


def test_ports_agree_with_flags_and_prometheus(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    targets: dict[str, set[str]] = {}
    for job in prom["scrape_configs"]:
        for group in job.get("static_configs", []):
            service = group.get("labels", {}).get("service")
            if service:
                targets.setdefault(service, set()).update(group["targets"])
    expected: dict[str, set[str]] = {}
    for name, svc, module, args in _pantheon(compose):
        role = ROLES[module]
        if role == "gateway":
            assert args.host == "0.0.0.0", f"{name} must listen beyond loopback"
            assert _host_ports(svc) == [(args.port, args.port)], name
            expected.setdefault(role, set()).add(f"{name}:{args.port}")
        else:
            assert args.metrics_port is not None, name
            expected.setdefault(role, set()).add(f"{name}:{args.metrics_port}")
    assert targets == expected


def test_prometheus_loads_the_alert_rules_and_grafana_the_dashboards(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    prom_mounts = dict(_mounts(services["prometheus"]))
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    rules_target = prom_mounts["../alerts"]
    assert prom["rule_files"] == [f"{rules_target}/*.yml"]
    assert list((COMPOSE_DIR / "../alerts").glob("*.yml")), "no alert rules in infra/alerts"
    grafana = services["grafana"]
    mounts = dict(_mounts(grafana))
    env = grafana["environment"]
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["../grafana/dashboards"] == env["PANTHEON_GRAFANA_DASHBOARDS"]
    assert list((COMPOSE_DIR / "../grafana/dashboards").glob("*.json"))
    provisioning = "".join(
        p.read_text() for p in (COMPOSE_DIR / "../grafana/provisioning").rglob("*.yml")
    )
    for var in ("PANTHEON_PROMETHEUS_URL", "PANTHEON_GRAFANA_DASHBOARDS"):
        assert "${" + var + "}" in provisioning
        assert var in env
    assert env["PANTHEON_PROMETHEUS_URL"] == "http://prometheus:9090"


# -- Kafka ----------------------------------------------------------------------------------


def test_kafka_is_three_kraft_nodes_with_replication_3_and_min_isr_2(
    compose: dict[str, Any],
) -> None:
    services = _services(compose)
    brokers = sorted(n for n in services if re.fullmatch(r"kafka-\d", n))
    assert brokers == ["kafka-1", "kafka-2", "kafka-3"]
    voters = {f"{i}@kafka-{i}:9093" for i in (1, 2, 3)}
    ids = set()
    for name in brokers:
        svc = services[name]
        assert svc["image"] == f"apache/kafka:{KAFKA_VERSION}"
        env = {k: str(v) for k, v in svc["environment"].items()}
        ids.add(env["KAFKA_NODE_ID"])
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert f"INTERNAL://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert "INTERNAL://:9092" in env["KAFKA_LISTENERS"]
        assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"]
        assert len(env["CLUSTER_ID"]) == 22  # 16 bytes, base64url without padding
        assert any(target == "/var/lib/kafka/data" for _, target in _mounts(svc))
    assert ids == {"1", "2", "3"}


def test_topic_script_creates_what_streams_topics_defines(compose: dict[str, Any]) -> None:
    init = _services(compose)["kafka-init"]
    assert init["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert init["environment"]["INSTITUTIONS"].split() == _institutions(compose)
    assert init["environment"]["PREFIX"] == "pantheon."
    script = (COMPOSE_DIR / "create-topics.sh").read_text()
    created = dict(re.findall(r"^create ([\w.]+) (\d+)$", script, re.M))
    assert created == {spec.suffix: str(spec.partitions) for spec in LEDGER_TOPICS}
    assert created["l2.records"] == str(L2_PARTITIONS)
    assert 'create "iam.${institution}" 1' in script

    def array(name: str) -> dict[str, str]:
        body = re.search(rf"^{name}=\((.*?)^\)", script, re.M | re.S)
        assert body is not None, name
        return dict(re.findall(r"--config ([\w.]+)=(\S+)", body.group(1)))

    assert array("LEDGER_CONFIG") | array("FOREVER") == ledger_config(3)
    assert array("LEDGER_CONFIG") | array("FEEDS_CONFIG") == ledger_config(3) | FEEDS_CONFIG
    assert 'if [ "$1" = feeds ]; then retention=("${FEEDS_CONFIG[@]}")' in script
    assert "--replication-factor 3" in script
    for name, svc in _services(compose).items():
        if name.startswith(("validator-", "projector-", "gateway-")):
            assert "kafka-init" in svc["depends_on"] or any(
                "kafka-init" in _services(compose)[d].get("depends_on", {})
                for d in svc["depends_on"]
            ), f"{name} may start before the topics exist"

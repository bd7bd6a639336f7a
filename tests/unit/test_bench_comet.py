"""The pure parts of ``bench.comet``: node IDs, config patching, the localnet's settings,
the load generator's result and the source hash (no CometBFT or Go run here)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from bench.comet import (
    CometBenchError,
    Ports,
    localnet_changes,
    node_id,
    parse_result,
    patch_toml,
    report,
    source_hash,
)

# A node_key.json written by `cometnode testnet` (CometBFT v0.38.26) and the ID that
# CometBFT's p2p.LoadNodeKey(...).ID() gives for it.
NODE_KEY = {
    "priv_key": {
        "type": "tendermint/PrivKeyEd25519",
        "value": "MLb5Rk9y8es4NraAawdwdy4R+0En65eaEt6CeJ/k7GsqOKBG8k1A6vy1uticMbmF"
        "pL0ASheFzvx1Mqwgsyai4w==",
    }
}
NODE_ID = "439ae728f2ca8528fd33805db3426b5e1ccb7bcc"

CONFIG = """\
# top-level comment
proxy_app = "tcp://127.0.0.1:26658"
moniker = "4644B68B82FEAE2E"
log_level = "info"

[rpc]
laddr = "tcp://127.0.0.1:26657"

[p2p]
laddr = "tcp://0.0.0.0:26656"
persistent_peers = ""
persistent_peers_max_dial_period = "0s"
addr_book_strict = false
pex = true
allow_duplicate_ip = true

[mempool]
recheck = true
size = 5000
cache_size = 10000

[consensus]
timeout_propose = "3s"
timeout_commit = "1s"

[tx_index]
indexer = "kv"
"""

RESULT = {
    "verify_rate": 20000.0,
    "throughput": 2000.0,
    "wall": 4.0,
    "send_wall": 1.5,
    "paced_rate": 1000.0,
    "p50": 0.6,
    "p99": 1.2,
    "finalized": 10000,
    "rejected": 0,
    "blocks": 5,
    "block_txs": 8000,
    "paced_interval": 0.25,
    "cpu_validators": 4.0,
    "cpu_loadgen": 0.5,
}


def test_node_id_is_cometbfts() -> None:
    assert node_id(NODE_KEY) == NODE_ID


@pytest.mark.parametrize(
    "doc",
    [{}, {"priv_key": {}}, {"priv_key": {"value": "AAAA"}}, {"priv_key": {"value": "!!"}}],
)
def test_node_id_rejects_bad_keys(doc: dict[str, object]) -> None:
    with pytest.raises(CometBenchError):
        node_id(doc)


def test_patch_replaces_only_the_named_keys_of_each_table() -> None:
    out = patch_toml(
        CONFIG,
        {
            "": {"moniker": "bench-0"},
            "rpc": {"laddr": "tcp://127.0.0.1:4001"},
            "p2p": {"laddr": "tcp://127.0.0.1:4002", "persistent_peers": "a@b:1", "pex": False},
            "mempool": {"size": 18000},
        },
    )
    doc = tomllib.loads(out)
    assert doc["moniker"] == "bench-0"
    assert doc["rpc"]["laddr"] == "tcp://127.0.0.1:4001"
    assert doc["p2p"]["laddr"] == "tcp://127.0.0.1:4002"
    assert doc["p2p"]["persistent_peers"] == "a@b:1"
    assert doc["p2p"]["persistent_peers_max_dial_period"] == "0s"
    assert doc["p2p"]["pex"] is False
    assert doc["mempool"] == {"recheck": True, "size": 18000, "cache_size": 10000}
    assert out.startswith("# top-level comment\n")
    assert len(out.splitlines()) == len(CONFIG.splitlines())


def test_patch_refuses_a_key_it_cannot_find_and_changes_nothing() -> None:
    with pytest.raises(CometBenchError, match=r"\[consensus\] timeout_commitx"):
        patch_toml(CONFIG, {"consensus": {"timeout_commitx": "1s"}})
    with pytest.raises(CometBenchError, match=r"\[rpc\] pex"):
        patch_toml(CONFIG, {"rpc": {"pex": False}})


def test_localnet_config_points_each_node_at_the_other_three() -> None:
    ports = [Ports(5000 + 2 * i, 5001 + 2 * i) for i in range(4)]
    ids = [f"{i:040x}" for i in range(4)]
    changes = localnet_changes(2, ports, ids, timeout_commit="100ms", mempool_size=18000)
    doc = tomllib.loads(patch_toml(CONFIG, changes))
    assert doc["rpc"]["laddr"] == "tcp://127.0.0.1:5005"
    assert doc["p2p"]["laddr"] == "tcp://127.0.0.1:5004"
    peers = doc["p2p"]["persistent_peers"].split(",")
    assert peers == [f"{ids[i]}@127.0.0.1:{5000 + 2 * i}" for i in (0, 1, 3)]
    assert doc["consensus"]["timeout_commit"] == "100ms"
    assert doc["mempool"]["size"] == 18000
    assert doc["tx_index"]["indexer"] == "null"


def test_parse_result_reads_the_last_line() -> None:
    r = parse_result("noise\n" + json.dumps(RESULT) + "\n\n")
    assert r.throughput == 2000.0
    assert r.finalized == 10000
    assert isinstance(r.blocks, int)


@pytest.mark.parametrize(
    "output",
    [
        "",
        "not json",
        "[1, 2]",
        json.dumps({**RESULT, "p99": None}),
        json.dumps({k: v for k, v in RESULT.items() if k != "wall"}),
        json.dumps({**RESULT, "blocks": 2.5}),
        json.dumps({**RESULT, "rejected": True}),
    ],
)
def test_parse_result_rejects_bad_output(output: str) -> None:
    with pytest.raises(CometBenchError):
        parse_result(output)


def report_of_result(verifies_per_tx: int = 1) -> list[str]:
    """RESULT's report for a burst of 8,000 on 2 cores."""
    return report(
        parse_result(json.dumps(RESULT)),
        label="x",
        txs=8000,
        cores=2,
        load=("1.00 1.00 1.00", "2.00 2.00 2.00"),
        verifies_per_tx=verifies_per_tx,
    )


def test_report_derives_the_ceiling_and_cpu_per_tx() -> None:
    lines = report_of_result()
    # ceiling 20,000 x 2 / 4 = 10,000; 4 CPU-s over 4 x 8,000 verifications = 125 us
    assert "finalized     2,000 tx/s (20% of ceiling 10,000" in lines[0]
    assert "1,600 tx per block" in lines[0]
    assert "p50 600 ms, p99 1200 ms (a block every 250 ms)" in lines[1]
    assert "125 us = 2.50 x one verify (50 us)" in lines[3]
    assert "before 1.00 1.00 1.00, after 2.00 2.00 2.00" in lines[4]


def test_source_hash_follows_go_sources_only(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("module x\n")
    (tmp_path / "cmd").mkdir()
    (tmp_path / "cmd" / "main.go").write_text("package main\n")
    first = source_hash(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored")
    assert source_hash(tmp_path) == first
    (tmp_path / "cmd" / "main.go").write_text("package main // changed\n")
    assert source_hash(tmp_path) != first


def test_report_halves_the_ceiling_when_checktx_verifies_too() -> None:
    lines = report_of_result(verifies_per_tx=2)
    assert "(40% of ceiling 5,000 = 20,000 verifies/s x 2 cores / 4 validators / 2" in lines[0]
    assert "Ed25519 verify ~3.2 s" in lines[2]

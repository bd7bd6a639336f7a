"""Which signer policy the gateway's IAM readers get (D75): certified with ``--genesis``."""

from __future__ import annotations

from pathlib import Path

from gateway import server
from projections.iam_certified import CertifiedSigners
from projections.iam_signers import ChainSigners, PinnedSigners
from tests.unit.chain_helpers import consortium

BASE = ["--institution", "inst-1", "--dsn", "host=nowhere", "--bootstrap", "nowhere:9092"]


def test_the_gateway_believes_the_chain_tables_only_with_certificates(tmp_path: Path) -> None:
    genesis = tmp_path / "genesis.avro"
    genesis.write_bytes(consortium(4).genesis.encode())
    args = server.build_parser().parse_args([*BASE, "--genesis", str(genesis)])
    first, second = server._signers(args, None), server._signers(args, None)
    assert isinstance(first, CertifiedSigners) and first is not second  # one per reader
    bare = server.build_parser().parse_args(BASE)
    assert isinstance(server._signers(bare, None), ChainSigners)
    pinned = PinnedSigners("inst-1", [])
    trust = server.IamTrust(signers=pinned, key_height=lambda: 0)
    assert server._signers(args, trust) is pinned

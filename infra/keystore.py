"""Key and genesis files: the I/O shell around ``ledger.keys`` and ``ledger.genesis``.

Secrets (Ed25519 seeds) are drawn here, from the OS, and written only to files created
with mode 0600 inside directories of mode 0700; a file is never overwritten, so a
mistyped command cannot destroy a key. Public facts go to ordinary files.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger.genesis import Genesis, plan_consortium
from ledger.keys import SEED_BYTES, KeyPair


class KeystoreError(ValueError):
    """A key file is missing, malformed, world-readable, or would be overwritten."""


def write_secret(path: Path, data: dict[str, Any]) -> None:
    """Create ``path`` with mode 0600 (fails if it exists) and write ``data`` as JSON."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeystoreError(f"{path} exists; refusing to overwrite a key file") from exc
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def generate_key(path: Path) -> KeyPair:
    """A new key pair, its seed saved to ``path`` (0600)."""
    pair = KeyPair.from_seed(secrets.token_bytes(SEED_BYTES))
    write_secret(path, {**pair.describe(), "seed": pair.seed.hex()})
    return pair


def load_key(path: Path) -> KeyPair:
    """The key pair saved in ``path``; refuses files others can read."""
    try:
        mode = path.stat().st_mode
        record = json.loads(path.read_text())
        pair = KeyPair.from_seed(bytes.fromhex(record["seed"]))
    except FileNotFoundError as exc:
        raise KeystoreError(f"no key file at {path}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not a Pantheon key file: {exc}") from exc
    if mode & 0o077:
        raise KeystoreError(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600")
    if record.get("key_id") not in (None, pair.key_id.hex()):
        raise KeystoreError(f"{path}: key_id does not match its seed")
    return pair


def create_genesis(
    out_dir: Path,
    chain_id: str,
    institutions: Sequence[str],
    *,
    operators_per_institution: int = 1,
    **params: int,
) -> Genesis:
    """Write ``genesis.avro``, ``genesis.json`` and ``keys/<institution>.json`` (0600).

    ``params`` override chain parameters (``block_interval_ms``, ``max_block_txs``, ...).
    """
    genesis_file = out_dir / "genesis.avro"
    if genesis_file.exists():
        raise KeystoreError(f"{genesis_file} exists; refusing to replace a genesis")
    institutions = sorted(institutions)
    per = 1 + operators_per_institution
    seeds = [secrets.token_bytes(SEED_BYTES) for _ in range(per * len(institutions))]
    plan = plan_consortium(
        chain_id,
        list(institutions),
        seeds,
        operators_per_institution=operators_per_institution,
        **params,
    )
    for institution in institutions:
        write_secret(out_dir / "keys" / f"{institution}.json", plan.keystore(institution))
    out_dir.mkdir(parents=True, exist_ok=True)
    genesis_file.write_bytes(plan.genesis.encode())
    summary = {
        "chain_id": chain_id,
        "genesis_hash": plan.genesis.hash().hex(),
        "institutions": {
            inst: {
                "governance_key_id": plan.keys[inst][0].key_id.hex(),
                "operator_key_ids": [op.key_id.hex() for op in plan.keys[inst][1]],
            }
            for inst in institutions
        },
    }
    (out_dir / "genesis.json").write_text(json.dumps(summary, indent=2) + "\n")
    return plan.genesis


def load_genesis(path: Path) -> Genesis:
    """The genesis document in ``path`` (as written by :func:`create_genesis`)."""
    return Genesis.decode(path.read_bytes())

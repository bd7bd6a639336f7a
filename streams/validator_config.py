"""What a validator process is told: its configuration, its arguments, its operator key.

``pantheon validator`` and ``python -m streams.validator`` share :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from ledger.keys import KeyPair
from runtime.cli_args import ConfigError, add_chain_options, add_process_options


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatorConfig:
    """Everything a validator process needs to know."""

    genesis: Path
    keystore: Path
    institution: str
    operator: int
    bootstrap: str
    prefix: str
    state_dir: Path
    metrics_port: int | None = None
    verify_workers: int = 0


def load_operator(keystore: Path, institution: str, index: int) -> KeyPair:
    """The operator key ``index`` of ``institution`` from its keystore file."""
    try:
        doc = json.loads(keystore.read_text())
        if doc["institution_id"] != institution:
            raise ConfigError(f"{keystore} belongs to {doc['institution_id']}, not {institution}")
        seed = bytes.fromhex(doc["operators"][index]["seed"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read operator {index} from {keystore}: {exc}") from exc
    return KeyPair.from_seed(seed)


def build_parser(*, add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``pantheon validator`` / ``python -m streams.validator``."""
    p = argparse.ArgumentParser(
        prog="pantheon validator",
        description="run one operator's validator process",
        add_help=add_help,
    )
    add_chain_options(p)
    p.add_argument("--keystore", required=True, type=Path, help="the institution's key file")
    p.add_argument("--institution", required=True, help="institution id")
    p.add_argument("--operator", type=int, default=0, help="operator index in the keystore")
    p.add_argument("--state-dir", required=True, type=Path, help="snapshots, journal, status")
    p.add_argument(
        "--verify-workers",
        type=int,
        default=0,
        help="verify transaction signatures ahead in N worker processes (for a host with "
        "cores to spare; 0 = verify in the validator, the default)",
    )
    add_process_options(p, verbose=add_help)
    return p


def config_from_args(args: argparse.Namespace) -> ValidatorConfig:
    """A config from parsed arguments."""
    return ValidatorConfig(
        genesis=args.genesis,
        keystore=args.keystore,
        institution=args.institution,
        operator=args.operator,
        bootstrap=args.bootstrap,
        prefix=args.prefix,
        state_dir=args.state_dir,
        metrics_port=args.metrics_port,
        verify_workers=args.verify_workers,
    )

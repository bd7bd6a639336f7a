"""CPU cost of the proof-of-possession checks a validator runs per registration (D61, D63).

Prints CPU microseconds (one thread, best of three) of each contract check:
``registration_proof_valid`` for an ``AddOperator`` and a ``RegisterIdentity``,
``proposal_proofs_valid`` for a ``ProposeMember`` with ``--operators`` operator keys, and
``rotate_key_proof_valid``; each is one Ed25519 verification per key through
``ledger.keys.verify`` (ZIP-215, D34) plus the message's few dozen bytes.

    python -m bench.key_proofs [--n 2000] [--operators 1]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

from ledger.key_proofs import (
    add_operator_args,
    proposal_proofs_valid,
    propose_member_args,
    register_identity_args,
    registration_proof_valid,
    rotate_key_args,
    rotate_key_proof_valid,
)
from ledger.keys import KeyPair

CHAIN, INST = "bench-chain", "inst-1"


def _key(label: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(label.encode()).digest())


def cpu_us(check: Callable[[], bool], n: int) -> float:
    """CPU microseconds per call of ``check`` (best of three runs of ``n``)."""
    assert check(), "the honest proof must verify"
    best = float("inf")
    for _ in range(3):
        began = time.process_time()
        for _ in range(n):
            check()
        best = min(best, time.process_time() - began)
    return best / n * 1e6


def checks(operators: int) -> dict[str, Callable[[], bool]]:
    """The honest check of each proof-carrying operation."""
    new, old = _key("new"), _key("old")
    op = add_operator_args(new, chain_id=CHAIN, institution_id=INST)
    ident = register_identity_args(
        new, chain_id=CHAIN, institution_id=INST, kind="DEVICE", label="sensor-1"
    )
    member = propose_member_args(
        _key("gov"), [_key(f"op{i}") for i in range(operators)], chain_id=CHAIN, institution_id="x"
    )
    rot = rotate_key_args(new, chain_id=CHAIN, key_id=old.key_id, old_public_key=old.public_key)

    def registration(operation: str, role: str, args: dict[str, object], proof: str) -> bool:
        return registration_proof_valid(
            args[proof],
            chain_id=CHAIN,
            operation=operation,
            role=role,
            institution_id=INST,
            public_key=new.public_key,
            args=args,
        )

    return {
        "AddOperator": lambda: registration("AddOperator", "OPERATOR", op, "operator_key_proof"),
        "RegisterIdentity": lambda: registration("RegisterIdentity", "DEVICE", ident, "key_proof"),
        f"ProposeMember ({1 + operators} keys)": lambda: proposal_proofs_valid(
            member, chain_id=CHAIN
        ),
        "RotateKey": lambda: rotate_key_proof_valid(
            rot["new_key_proof"],
            chain_id=CHAIN,
            key_id=old.key_id,
            new_public_key=new.public_key,
            old_public_key=old.public_key,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="checks per run")
    parser.add_argument("--operators", type=int, default=1, help="operator keys proposed")
    args = parser.parse_args(argv)
    for name, check in checks(args.operators).items():
        print(f"{name:28s} {cpu_us(check, args.n):8.1f} µs CPU per transaction")


if __name__ == "__main__":
    main()

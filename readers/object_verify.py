"""Anchored off-chain objects: assemble their proofs from Postgres, verify them offline.

* :func:`object_proof` (``conn`` = a psycopg connection to an institution's database): the
  :class:`~ledger.proofs.ObjectProof` of ``data_id`` -- its accepted ``AnchorData`` envelope,
  the path from it to the block's ``tx_root`` and the final block (header, hash, quorum
  certificate) -- or None if the chain has no anchor for it in a projected block yet. The data
  access proxy (``GET /objects/{id}/proof``) serves it as JSON.
* :func:`verify_object` is the client library function: check downloaded bytes against a proof
  document and the genesis, raising :class:`~ledger.proofs.ObjectProofError` whose ``link`` (and
  message prefix) names the link that failed.
* ``pantheon verify-object --genesis G --proof proof.json FILE`` (:func:`object_verify_main`):
  exit 0 if valid, 1 if not (the failing link on stderr), 2 on bad usage.

Limitation (as for record proofs): the validator set of the block's height is the genesis
members restated for that height; blocks certified after a membership change are refused with
a message saying so unless the caller passes the validator set it trusts (``validators``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ledger.errors import DecodeError
from ledger.genesis import Genesis
from ledger.members import ValidatorSet
from ledger.proofs import (
    ObjectProof,
    ObjectProofError,
    ProofLink,
    VerifiedObject,
    verify_object_proof,
)
from readers.proofs import certified_inclusion
from runtime.cli_args import Defaults, Parser, apply_defaults
from runtime.pg import Conn

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def object_proof(
    conn: Conn, data_id: str, *, size: int = -1, content_type: str = ""
) -> ObjectProof | None:
    """The proof of the anchor of ``data_id`` (module docstring); None if not final yet.

    ``size`` and ``content_type`` describe the stored object (the proof binds the hash; these
    are informative, ``size`` is checked against downloaded bytes when it is not -1)."""
    meta = conn.execute("SELECT chain_id FROM chain.meta").fetchone()
    anchor = conn.execute(
        "SELECT sha256, height FROM chain.anchors WHERE data_id = %s", (data_id,)
    ).fetchone()
    if meta is None or anchor is None:
        return None
    height = int(anchor[1])
    found = certified_inclusion(conn, height, "AnchorData", "data_id", data_id)
    if found is None:
        return None
    part, certified = found
    return ObjectProof(
        chain_id=str(meta[0]),
        data_id=data_id,
        sha256=bytes(anchor[0]),
        size=size,
        content_type=content_type,
        tx_id=certified.entries[part.tx_index].tx_id,
        block_hash=certified.block_hash,
        inclusion=part,
    )


def verify_object(
    data: bytes,
    proof: Mapping[str, Any],
    genesis: Genesis,
    *,
    validators: ValidatorSet | None = None,
) -> None:
    """Check ``data`` against the proof document ``proof`` (``GET /objects/{id}/proof``) and
    the chain's ``genesis``; raise :class:`ObjectProofError` naming the failed link."""
    verify_object_details(data, proof, genesis, validators=validators)


def verify_object_details(
    data: bytes,
    proof: Mapping[str, Any],
    genesis: Genesis,
    *,
    validators: ValidatorSet | None = None,
) -> VerifiedObject:
    """:func:`verify_object`, returning what the proof establishes."""
    parsed = ObjectProof.from_json(proof)
    if parsed.size < 0:  # size unknown to the prover: the hash alone binds the bytes
        parsed = replace(parsed, size=len(data))
    return verify_object_proof(parsed, genesis, data, validators)


# -- command line ---------------------------------------------------------------------------------


def object_verify_parser(defaults: Defaults | None = None) -> Parser:
    """Arguments of ``pantheon verify-object``."""
    p = Parser(prog="pantheon verify-object", description=__doc__.splitlines()[0])
    p.add_argument("--genesis", type=Path, required=True, help="genesis.avro of the chain")
    p.add_argument("--proof", type=Path, required=True, help="proof JSON (GET /objects/ID/proof)")
    p.add_argument("file", type=Path, help="the downloaded object ('-' for stdin)")
    apply_defaults(p, defaults)
    return p


def object_verify_main(
    argv: Sequence[str] | None = None, *, defaults: Defaults | None = None
) -> int:
    """``pantheon verify-object``: check a downloaded object offline against its proof and the
    genesis (exit 0 valid, 1 invalid, 2 when it could not run: bad usage, a file unreadable)."""
    p = object_verify_parser(defaults)
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_VALID
    try:
        genesis = Genesis.decode(args.genesis.read_bytes())
        data = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
        text = args.proof.read_text()
    except OSError as exc:
        where = exc.filename or args.file
        print(
            f"pantheon verify-object: error: cannot read {where}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_USAGE
    except (DecodeError, ValueError) as exc:
        what = f"cannot read the genesis {args.genesis}: {exc}"
        print(f"pantheon verify-object: error: {what}", file=sys.stderr)
        return EXIT_USAGE
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: hostile nesting
        print(f"INVALID: {ProofLink.FORMAT.value}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not isinstance(doc, dict):
        print(f"INVALID: {ProofLink.FORMAT.value}: not a JSON object", file=sys.stderr)
        return EXIT_INVALID
    try:
        ok = verify_object_details(data, doc, genesis)
    except ObjectProofError as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(
        json.dumps(
            {
                "valid": True,
                "data_id": ok.data_id,
                "sha256": ok.sha256.hex(),
                "size": ok.size,
                "tx_id": ok.tx_id.hex(),
                "anchored_by": ok.anchored_by.hex(),
                "height": ok.height,
                "block_hash": ok.block_hash.hex(),
            },
            indent=2,
        )
    )
    return EXIT_VALID


if __name__ == "__main__":
    sys.exit(object_verify_main())

"""Layer-2 proofs: assemble them from Postgres (gateway, CLI) and verify them offline.

* :func:`record_proof` (``conn`` = a psycopg connection to an institution's database): the
  reading ``sequence`` of a device with its leaf, audit path, batch root, the committing
  ``CommitBatch`` envelope, its path in the block's ``tx_root`` and the final block (header and
  quorum certificate), or None if the reading is unknown or its batch is not in a final,
  projected block yet. :func:`record_proof_json` returns the same as a JSON-ready dict.
* ``pantheon proof`` (:func:`proof_main`) prints that document; ``pantheon verify``
  (:func:`verify_main`) checks one offline with only the genesis file
  (:func:`ledger.proofs.verify_record_proof`; see its limitation on membership changes).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from ledger.errors import DecodeError, ProofError
from ledger.genesis import Genesis
from ledger.l2 import BUNDLE_KIND, RECORD_KIND
from ledger.merkle import inclusion_proof, root
from ledger.proofs import RecordProof, TxInclusion, verify_record_proof
from projections import l2 as store
from projections.read import CertifiedBlock, accepted_tx, certified_block
from runtime.cli_args import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    Defaults,
    Parser,
    apply_defaults,
    hex_bytes,
)
from runtime.pg import Conn


def record_proof(conn: Conn, device_key_id: bytes, sequence: int) -> RecordProof | None:
    """The proof of one device reading (see the module docstring); None if not provable yet."""
    found = store.leaf_of(conn, device_key_id, sequence)
    if found is None:
        return None
    batch_id, leaf_index, kind, leaf = found
    leaves = store.batch_leaves(conn, batch_id)
    meta = conn.execute("SELECT chain_id FROM chain.meta").fetchone()
    key = conn.execute(
        "SELECT public_key FROM chain.keys WHERE key_id = %s", (device_key_id,)
    ).fetchone()
    on_chain = conn.execute(
        "SELECT height, merkle_root FROM chain.l2_batches WHERE batch_id = %s", (batch_id,)
    ).fetchone()
    if meta is None or key is None or on_chain is None:
        return None
    height = int(on_chain[0])
    if bytes(on_chain[1]) != root(leaves):
        raise ProofError(f"batch {batch_id}: stored leaves do not give the root on chain")
    included = certified_inclusion(conn, height, "CommitBatch", "batch_id", batch_id)
    if included is None:
        return None
    part = included[0]
    return RecordProof(
        chain_id=str(meta[0]),
        device_public_key=bytes(key[0]),
        kind=RECORD_KIND if kind == 0 else BUNDLE_KIND,
        leaf=leaf,
        sequence=sequence,
        batch_id=batch_id,
        leaf_index=leaf_index,
        leaf_count=len(leaves),
        audit_path=tuple(inclusion_proof(leaves, leaf_index)),
        merkle_root=root(leaves),
        inclusion=part,
    )


def certified_inclusion(
    conn: Conn, height: int, operation: str, arg: str, value: object
) -> tuple[TxInclusion, CertifiedBlock] | None:
    """The inclusion part of the accepted ``operation`` at ``height`` whose ``arg`` is ``value``
    (and its final block), or None if that block is not projected and certified yet."""
    found = accepted_tx(conn, height, operation, arg, value)
    certified = certified_block(conn, height)
    if found is None or certified is None:
        return None
    position, offset, envelope = found
    part = TxInclusion.assemble(
        certified.entries,
        position,
        offset=offset,
        envelope=envelope,
        header=certified.header,
        certificate=certified.certificate,
    )
    return part, certified


def record_proof_json(conn: Conn, device_key_id: bytes, sequence: int) -> dict[str, Any] | None:
    """:func:`record_proof` as a JSON-ready document (the gateway's GraphQL answer)."""
    proof = record_proof(conn, device_key_id, sequence)
    return proof.to_json() if proof is not None else None


# -- command line ---------------------------------------------------------------------------------


def proof_parser(defaults: Defaults | None = None) -> Parser:
    """Arguments of ``pantheon proof``."""
    p = Parser(prog="pantheon proof", description=proof_main.__doc__)
    p.add_argument(
        "--dsn", required=True, help="PostgreSQL server connection string (password: PGPASSWORD)"
    )
    p.add_argument("--institution", required=True, help="institution id (its database)")
    p.add_argument("--dbname", help="database (default pantheon_<institution>)")
    p.add_argument("--device", required=True, type=hex_bytes, help="device key id (hex)")
    p.add_argument("--sequence", type=int, required=True, help="the reading's sequence number")
    p.add_argument("--out", type=Path, help="write the proof to this file (default: stdout)")
    apply_defaults(p, defaults)
    return p


def proof_main(argv: Sequence[str] | None = None, *, defaults: Defaults | None = None) -> int:
    """``pantheon proof``: the proof of a device reading as JSON, on stdout or in ``--out``
    (exit 0; 1 when the reading has no final proof yet; 2 when it could not run)."""
    args = proof_parser(defaults).parse_args(argv)
    dbname = args.dbname or "pantheon_" + args.institution.replace("-", "_")
    with psycopg.connect(make_conninfo(args.dsn, dbname=dbname), connect_timeout=10) as conn:
        doc = record_proof_json(conn, args.device, args.sequence)
    if doc is None:
        print("pantheon proof: no final proof for this reading (yet)", file=sys.stderr)
        return EXIT_NO
    text = json.dumps(doc, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return EXIT_OK


def verify_parser(defaults: Defaults | None = None) -> Parser:
    """Arguments of ``pantheon verify``."""
    p = Parser(prog="pantheon verify", description=verify_main.__doc__)
    p.add_argument("--genesis", type=Path, required=True, help="genesis.avro of the chain")
    p.add_argument("proof", type=Path, help="proof JSON ('-' for stdin)")
    apply_defaults(p, defaults)
    return p


def verify_main(argv: Sequence[str] | None = None, *, defaults: Defaults | None = None) -> int:
    """``pantheon verify``: check a proof offline against the genesis (exit 0 valid, 1
    invalid, 2 when it could not run: the genesis or the proof file cannot be read)."""
    args = verify_parser(defaults).parse_args(argv)
    try:
        genesis = Genesis.decode(args.genesis.read_bytes())
    except (OSError, DecodeError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        print(
            f"pantheon verify: error: cannot read the genesis {args.genesis}: {why}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        text = sys.stdin.read() if str(args.proof) == "-" else args.proof.read_text()
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        print(f"pantheon verify: error: cannot read {args.proof}: {why}", file=sys.stderr)
        return EXIT_ERROR
    try:
        proof = RecordProof.from_json(json.loads(text))
        ok = verify_record_proof(proof, genesis)
    except (ValueError, RecursionError, DecodeError, ProofError) as exc:
        # RecursionError: JSON nested deeper than the interpreter's stack (a hostile file)
        print(
            f"INVALID: {type(exc).__name__ if isinstance(exc, RecursionError) else exc}",
            file=sys.stderr,
        )
        return EXIT_NO
    print(
        json.dumps(
            {
                "valid": True,
                "device_key_id": ok.device_key_id.hex(),
                "sequence": ok.sequence,
                "measured_at_ms": ok.measured_at_ms,
                "content_type": ok.content_type,
                "payload": ok.payload.hex(),
                "batch_id": ok.batch_id,
                "tx_id": ok.tx_id.hex(),
                "height": ok.height,
                "block_hash": ok.block_hash.hex(),
            },
            indent=2,
        )
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(verify_main())

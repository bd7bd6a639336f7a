"""System contracts (DESIGN.md section 5): the operations of the state machine.

Theory of operation
-------------------
* :data:`CONTRACTS` is a table ``operation -> (roles allowed to send it, function)``; the
  role check happens here, before the function runs, and a sender of another role gets
  ``FORBIDDEN``. Each function checks its own arguments and permissions and returns a
  :class:`~ledger.results.ResultCode`; it writes only when it returns ``OK`` (and the caller
  discards the transaction's overlay otherwise, so a rejected operation changes nothing).
* Operators and identities belong to the sender's institution; only its governance key
  manages them (an identity may also revoke or rotate itself; a SERVICE identity may register
  USER and DEVICE identities). Key ids are never reused, even after revocation. A rotation
  carries the new key's proof of possession (:mod:`ledger.key_proofs`, D61), and so does
  every key ``AddOperator`` and ``RegisterIdentity`` register (D63): ``BAD_KEY_PROOF``
  otherwise.
* Anchors, batches and assets are keyed by their ids, written once; an asset is transferred
  only by a transaction signed by its current owner key.
* ``ReportEquivocation`` records two valid votes of one operator for different hashes at one
  height as evidence, once per (operator, height).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ledger.context import (
    MAX_LABEL_CHARS,
    MAX_OPERATORS,
    TxContext,
    fits_metadata,
    is_id,
    is_public_key,
)
from ledger.errors import InvalidEvent
from ledger.governance import cast_vote, propose_member, propose_removal
from ledger.hashing import HASH_BYTES, sha256
from ledger.key_proofs import registration_proof_valid, rotate_key_proof_valid
from ledger.members import inst_key, key_key
from ledger.results import ResultCode
from ledger.state import Overlay
from ledger.votes import Vote

Args = Mapping[str, Any]
Contract = Callable[[Overlay, TxContext, Args], ResultCode]

IDENTITY_ROLES = frozenset({"SERVICE", "USER", "DEVICE"})
WRITERS = frozenset({"GOVERNANCE", "SERVICE", "USER", "DEVICE"})
GOVERNANCE = frozenset({"GOVERNANCE"})


def _new_key(view: Overlay, ctx: TxContext, public_key: bytes, role: str, label: str) -> bytes:
    kid = sha256(public_key)
    view.put(
        key_key(kid),
        {
            "key_id": kid,
            "public_key": public_key,
            "role": role,
            "institution_id": ctx.institution,
            "label": label,
            "active": True,
            "next_nonce": 0,
        },
    )
    return kid


def add_operator(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``AddOperator``: a new operator key of the sender's institution, proven held by its
    signature of the registration (``BAD_KEY_PROOF`` otherwise, D63)."""
    public_key = args["operator_public_key"]
    if not is_public_key(public_key):
        return ResultCode.INVALID_ARGUMENT
    if not registration_proof_valid(
        args.get("operator_key_proof", b""),  # absent in envelopes of a retired schema (D63)
        chain_id=str(ctx.params["chain_id"]),
        operation="AddOperator",
        role="OPERATOR",
        institution_id=ctx.institution,
        public_key=public_key,
        args=args,
    ):
        return ResultCode.BAD_KEY_PROOF
    if view.get(key_key(sha256(public_key))) is not None:
        return ResultCode.ALREADY_EXISTS
    inst = view.get(inst_key(ctx.institution))
    assert inst is not None
    if len(inst["operator_key_ids"]) >= MAX_OPERATORS:
        return ResultCode.FORBIDDEN
    kid = _new_key(view, ctx, public_key, "OPERATOR", "operator")
    view.put(
        inst_key(ctx.institution),
        {**inst, "operator_key_ids": sorted([*inst["operator_key_ids"], kid])},
    )
    return ResultCode.OK


def remove_operator(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``RemoveOperator``: retire an operator key of the sender's institution."""
    kid = args["operator_key_id"]
    key = view.get(key_key(kid))
    if key is None or key["role"] != "OPERATOR" or not key["active"]:
        return ResultCode.NOT_FOUND
    if key["institution_id"] != ctx.institution:
        return ResultCode.FORBIDDEN
    inst = view.get(inst_key(ctx.institution))
    assert inst is not None
    view.put(key_key(kid), {**key, "active": False})
    view.put(
        inst_key(ctx.institution),
        {**inst, "operator_key_ids": [k for k in inst["operator_key_ids"] if k != kid]},
    )
    return ResultCode.OK


def register_identity(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``RegisterIdentity``: a service, user or device key of the sender's institution,
    proven held by its signature of the registration (``BAD_KEY_PROOF`` otherwise, D63)."""
    public_key, kind, label = args["public_key"], args["kind"], args["label"]
    if not is_public_key(public_key) or len(label) > MAX_LABEL_CHARS:
        return ResultCode.INVALID_ARGUMENT
    if ctx.role == "SERVICE" and kind == "SERVICE":
        return ResultCode.FORBIDDEN
    if not registration_proof_valid(
        args.get("key_proof", b""),  # absent in envelopes of a retired schema (D63)
        chain_id=str(ctx.params["chain_id"]),
        operation="RegisterIdentity",
        role=kind,
        institution_id=ctx.institution,
        public_key=public_key,
        args=args,
    ):
        return ResultCode.BAD_KEY_PROOF
    if view.get(key_key(sha256(public_key))) is not None:
        return ResultCode.ALREADY_EXISTS
    _new_key(view, ctx, public_key, kind, label)
    return ResultCode.OK


def _target_key(view: Overlay, ctx: TxContext, kid: bytes) -> tuple[ResultCode, Any]:
    key = view.get(key_key(kid))
    if key is None or not key["active"]:
        return ResultCode.NOT_FOUND, None
    if key["institution_id"] != ctx.institution:
        return ResultCode.FORBIDDEN, None
    if kid != ctx.sender_id and ctx.role != "GOVERNANCE":
        return ResultCode.FORBIDDEN, None
    return ResultCode.OK, key


def revoke_identity(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``RevokeIdentity``: by the institution's governance key or by the identity itself."""
    code, key = _target_key(view, ctx, args["key_id"])
    if code is not ResultCode.OK:
        return code
    if key["role"] not in IDENTITY_ROLES:
        return ResultCode.FORBIDDEN
    view.put(key_key(args["key_id"]), {**key, "active": False})
    return ResultCode.OK


def rotate_key(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``RotateKey``: replace any key of the institution (governance, operator or identity),
    proven held by the new key's signature of the rotation (``BAD_KEY_PROOF`` otherwise, D61)."""
    kid, new_public = args["key_id"], args["new_public_key"]
    if not is_public_key(new_public):
        return ResultCode.INVALID_ARGUMENT
    code, key = _target_key(view, ctx, kid)
    if code is not ResultCode.OK:
        return code
    if not rotate_key_proof_valid(
        args.get("new_key_proof", b""),  # absent in envelopes of the retired schema (D61)
        chain_id=str(ctx.params["chain_id"]),
        key_id=kid,
        new_public_key=new_public,
        old_public_key=key["public_key"],
    ):
        return ResultCode.BAD_KEY_PROOF
    new_kid = sha256(new_public)
    if view.get(key_key(new_kid)) is not None:
        return ResultCode.ALREADY_EXISTS
    view.put(key_key(kid), {**key, "active": False})
    view.put(
        key_key(new_kid),
        {**key, "key_id": new_kid, "public_key": new_public, "active": True, "next_nonce": 0},
    )
    inst = view.get(inst_key(ctx.institution))
    assert inst is not None
    if key["role"] == "GOVERNANCE":
        view.put(inst_key(ctx.institution), {**inst, "governance_key_id": new_kid})
    elif key["role"] == "OPERATOR":
        operators = sorted([k for k in inst["operator_key_ids"] if k != kid] + [new_kid])
        view.put(inst_key(ctx.institution), {**inst, "operator_key_ids": operators})
    return ResultCode.OK


def anchor_data(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``AnchorData``: record the SHA-256 of an off-chain object, once per data id."""
    if (
        not is_id(args["data_id"])
        or len(args["sha256"]) != HASH_BYTES
        or not fits_metadata(args["metadata"])
    ):
        return ResultCode.INVALID_ARGUMENT
    key = f"anchor/{args['data_id']}"
    if view.get(key) is not None:
        return ResultCode.ALREADY_EXISTS
    view.put(
        key,
        {
            "data_id": args["data_id"],
            "sha256": args["sha256"],
            "metadata": args["metadata"],
            "institution_id": ctx.institution,
            "anchored_by": ctx.sender_id,
            "height": ctx.height,
        },
    )
    return ResultCode.OK


def commit_batch(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``CommitBatch``: record a Layer-2 batch root, once per batch id."""
    if (
        not is_id(args["batch_id"])
        or len(args["merkle_root"]) != HASH_BYTES
        or args["leaf_count"] < 1
        or args["window_start_ms"] > args["window_end_ms"]
    ):
        return ResultCode.INVALID_ARGUMENT
    key = f"batch/{args['batch_id']}"
    if view.get(key) is not None:
        return ResultCode.ALREADY_EXISTS
    view.put(
        key,
        {
            "batch_id": args["batch_id"],
            "merkle_root": args["merkle_root"],
            "leaf_count": args["leaf_count"],
            "window_start_ms": args["window_start_ms"],
            "window_end_ms": args["window_end_ms"],
            "institution_id": ctx.institution,
            "committed_by": ctx.sender_id,
            "height": ctx.height,
        },
    )
    return ResultCode.OK


def register_asset(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``RegisterAsset``: a new asset owned by the sender's key."""
    if not is_id(args["asset_id"]) or not fits_metadata(args["metadata"]):
        return ResultCode.INVALID_ARGUMENT
    key = f"asset/{args['asset_id']}"
    if view.get(key) is not None:
        return ResultCode.ALREADY_EXISTS
    view.put(
        key,
        {
            "asset_id": args["asset_id"],
            "owner_key_id": ctx.sender_id,
            "metadata": args["metadata"],
            "registered_height": ctx.height,
        },
    )
    return ResultCode.OK


def transfer_asset(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``TransferAsset``: only a transaction signed by the owner key moves an asset."""
    key = f"asset/{args['asset_id']}"
    asset = view.get(key)
    if asset is None:
        return ResultCode.NOT_FOUND
    if asset["owner_key_id"] != ctx.sender_id:
        return ResultCode.FORBIDDEN
    new_owner = view.get(key_key(args["new_owner_key_id"]))
    if new_owner is None or not new_owner["active"]:
        return ResultCode.NOT_FOUND
    view.put(key, {**asset, "owner_key_id": args["new_owner_key_id"]})
    return ResultCode.OK


def report_equivocation(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``ReportEquivocation``: two valid, different votes of one operator at one height."""
    try:
        a, b = Vote.from_record(args["vote_a"]), Vote.from_record(args["vote_b"])
    except InvalidEvent:
        return ResultCode.INVALID_ARGUMENT
    if (
        a.height != b.height
        or a.operator_key_id != b.operator_key_id
        or a.block_hash == b.block_hash
        or not a.is_valid()
        or not b.is_valid()
    ):
        return ResultCode.INVALID_ARGUMENT
    operator = view.get(key_key(a.operator_key_id))
    if operator is None or operator["role"] != "OPERATOR":
        return ResultCode.NOT_FOUND
    key = f"evidence/{a.operator_key_id.hex()}/{a.height}"
    if view.get(key) is not None:
        return ResultCode.ALREADY_EXISTS
    hash_a, hash_b = sorted([a.block_hash, b.block_hash])
    view.put(
        key,
        {
            "operator_key_id": a.operator_key_id,
            "institution_id": operator["institution_id"],
            "height": a.height,
            "hash_a": hash_a,
            "hash_b": hash_b,
            "reported_height": ctx.height,
        },
    )
    return ResultCode.OK


CONTRACTS: Mapping[str, tuple[frozenset[str], Contract]] = {
    "ProposeMember": (GOVERNANCE, propose_member),
    "ProposeRemoval": (GOVERNANCE, propose_removal),
    "CastVote": (GOVERNANCE, cast_vote),
    "AddOperator": (GOVERNANCE, add_operator),
    "RemoveOperator": (GOVERNANCE, remove_operator),
    "RegisterIdentity": (frozenset({"GOVERNANCE", "SERVICE"}), register_identity),
    "RevokeIdentity": (WRITERS, revoke_identity),
    "RotateKey": (WRITERS | {"OPERATOR"}, rotate_key),
    "AnchorData": (WRITERS, anchor_data),
    "CommitBatch": (frozenset({"GOVERNANCE", "SERVICE"}), commit_batch),
    "RegisterAsset": (WRITERS, register_asset),
    "TransferAsset": (WRITERS, transfer_asset),
    "ReportEquivocation": (WRITERS | {"OPERATOR"}, report_equivocation),
}


def run_contract(view: Overlay, ctx: TxContext, operation: str, args: Args) -> ResultCode:
    """Check the sender's role for ``operation`` and run it."""
    entry = CONTRACTS.get(operation)
    if entry is None:
        return ResultCode.MALFORMED
    roles, contract = entry
    if ctx.role not in roles:
        return ResultCode.FORBIDDEN
    return contract(view, ctx, args)

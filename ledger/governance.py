"""Governance contract: proposals to admit or remove institutions, and votes on them.

Theory of operation
-------------------
* Only governance keys of member institutions propose and vote. A proposal's id is the tx id
  of the transaction that made it; the proposer's institution votes yes implicitly.
* Each member institution votes once per proposal (``ALREADY_VOTED`` otherwise). A vote after
  ``expires_height = created_height + proposal_ttl_blocks`` is ``EXPIRED``; expiry is derived
  from the height, so nothing has to scan for stale proposals.
* After every vote the proposal is tallied against ``n``, the members at the current height,
  counting only voters that are still members: it passes when
  ``yes * threshold_den > n * threshold_num`` (default: more than two thirds) and is rejected
  once that can no longer happen.
* Passing writes the institution record with ``effective_height = height + 1``, so the change
  applies from the next block; an admitted institution's governance and operator keys are
  registered at once (each proved possession when proposed, D63). A removed institution
  keeps its records; its keys stop being able to write and its operators leave the
  validator set from the next block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.context import MAX_OPERATORS, TxContext, is_public_key, is_slug
from ledger.hashing import sha256
from ledger.key_proofs import proposal_proofs_valid
from ledger.members import inst_key, is_member, key_key, member_ids
from ledger.results import ResultCode
from ledger.state import Overlay, Record

Args = Mapping[str, Any]


def prop_key(proposal_id: bytes) -> str:
    """State key of a proposal."""
    return f"prop/{proposal_id.hex()}"


def propose_member(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``ProposeMember``: admit ``institution_id`` with its governance and operator keys,
    each proven held by its signature of the proposal (``BAD_KEY_PROOF`` otherwise, D63)."""
    inst_id = args["institution_id"]
    operators = list(args["operator_public_keys"])
    if not is_slug(inst_id) or len(operators) > MAX_OPERATORS:
        return ResultCode.INVALID_ARGUMENT
    if view.get(inst_key(inst_id)) is not None:
        return ResultCode.ALREADY_EXISTS
    keys = [args["governance_public_key"], *operators]
    if not all(is_public_key(k) for k in keys) or len(set(keys)) != len(keys):
        return ResultCode.INVALID_ARGUMENT
    if not proposal_proofs_valid(args, chain_id=str(ctx.params["chain_id"])):
        return ResultCode.BAD_KEY_PROOF
    if any(view.get(key_key(sha256(k))) is not None for k in keys):
        return ResultCode.ALREADY_EXISTS
    return _open(
        view,
        ctx,
        {
            "kind": "ADD_MEMBER",
            "institution_id": inst_id,
            "governance_public_key": args["governance_public_key"],
            "operator_public_keys": operators,
        },
    )


def propose_removal(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``ProposeRemoval``: remove a member (never the last one)."""
    inst_id = args["institution_id"]
    if not is_member(view.get(inst_key(inst_id)), ctx.height):
        return ResultCode.NOT_FOUND
    if len(member_ids(view, ctx.height)) < 2:
        return ResultCode.FORBIDDEN
    return _open(
        view,
        ctx,
        {
            "kind": "REMOVE_MEMBER",
            "institution_id": inst_id,
            "governance_public_key": b"",
            "operator_public_keys": [],
        },
    )


def _open(view: Overlay, ctx: TxContext, fields: dict[str, Any]) -> ResultCode:
    key = prop_key(ctx.tx_id)
    if view.get(key) is not None:
        return ResultCode.ALREADY_EXISTS
    proposal = {
        **fields,
        "proposal_id": ctx.tx_id,
        "proposer": ctx.institution,
        "created_height": ctx.height,
        "expires_height": ctx.height + int(ctx.params["proposal_ttl_blocks"]),
        "yes": [ctx.institution],
        "no": [],
        "status": "OPEN",
    }
    _tally(view, ctx, key, proposal)
    return ResultCode.OK


def cast_vote(view: Overlay, ctx: TxContext, args: Args) -> ResultCode:
    """``CastVote``: the sender's institution approves or rejects an open proposal."""
    key = prop_key(args["proposal_id"])
    proposal = view.get(key)
    if proposal is None:
        return ResultCode.NOT_FOUND
    if proposal["status"] != "OPEN":
        return ResultCode.CLOSED
    if ctx.height > proposal["expires_height"]:
        return ResultCode.EXPIRED
    if ctx.institution in proposal["yes"] or ctx.institution in proposal["no"]:
        return ResultCode.ALREADY_VOTED
    side = "yes" if args["approve"] else "no"
    updated = {**proposal, side: sorted([*proposal[side], ctx.institution])}
    _tally(view, ctx, key, updated)
    return ResultCode.OK


def _tally(view: Overlay, ctx: TxContext, key: str, proposal: dict[str, Any]) -> None:
    members = set(member_ids(view, ctx.height))
    n = len(members)
    num, den = int(ctx.params["threshold_num"]), int(ctx.params["threshold_den"])
    yes = len(members.intersection(proposal["yes"]))
    no = len(members.intersection(proposal["no"]))
    if yes * den > n * num:
        proposal = {**proposal, "status": "PASSED" if _enact(view, ctx, proposal) else "REJECTED"}
    elif (n - no) * den <= n * num:
        proposal = {**proposal, "status": "REJECTED"}
    view.put(key, proposal)


def _enact(view: Overlay, ctx: TxContext, proposal: Record) -> bool:
    inst_id = proposal["institution_id"]
    effective = ctx.height + 1
    if proposal["kind"] == "REMOVE_MEMBER":
        inst = view.get(inst_key(inst_id))
        if not is_member(inst, ctx.height) or len(member_ids(view, ctx.height)) < 2:
            return False
        assert inst is not None
        view.put(inst_key(inst_id), {**inst, "status": "REMOVED", "effective_height": effective})
        return True
    gov = bytes(proposal["governance_public_key"])
    operators = [bytes(k) for k in proposal["operator_public_keys"]]
    if view.get(inst_key(inst_id)) is not None or any(
        view.get(key_key(sha256(k))) is not None for k in [gov, *operators]
    ):
        return False
    for public_key, role in [(gov, "GOVERNANCE")] + [(k, "OPERATOR") for k in operators]:
        kid = sha256(public_key)
        view.put(
            key_key(kid),
            {
                "key_id": kid,
                "public_key": public_key,
                "role": role,
                "institution_id": inst_id,
                "label": role.lower(),
                "active": True,
                "next_nonce": 0,
            },
        )
    view.put(
        inst_key(inst_id),
        {
            "institution_id": inst_id,
            "governance_key_id": sha256(gov),
            "operator_key_ids": sorted(sha256(k) for k in operators),
            "status": "ACTIVE",
            "effective_height": effective,
        },
    )
    return True

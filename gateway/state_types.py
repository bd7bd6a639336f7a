"""GraphQL object types of the world state (members, proposals, anchors, assets, Layer-2
batches), of the chain's summary and of the caller (``me``).

Moved whole out of :mod:`gateway.types` (D45), whose helpers and conventions they share:
byte strings as lowercase hex, roots are the read API's frozen dataclasses.
"""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

import graphene

from gateway.types import Identity, Info, _hex_field
from projections import read
from projections.read.queries import Throughput


class Institution(graphene.ObjectType):
    """A member of the consortium with its active block operators."""

    id = graphene.String(required=True)
    governance_key_id = _hex_field("governance_key_id", "key id of the governance key")
    status = graphene.String(required=True)
    effective_height = graphene.Int(required=True)
    operators = graphene.List(graphene.NonNull(Identity), required=True)

    @staticmethod
    def resolve_id(root: read.Institution, _info: Info) -> str:
        return root.institution_id


class ProposalVote(graphene.ObjectType):
    institution_id = graphene.String(required=True)
    approve = graphene.Boolean(required=True)
    height = graphene.Int(required=True)


class Proposal(graphene.ObjectType):
    """A governance proposal (admit or remove a member) and its votes."""

    id = _hex_field("proposal_id", "id of the transaction that proposed it")
    kind = graphene.String(required=True)
    institution_id = graphene.String(required=True)
    proposer = graphene.String(required=True)
    created_height = graphene.Int(required=True)
    expires_height = graphene.Int(required=True)
    status = graphene.String(required=True)
    votes = graphene.List(graphene.NonNull(ProposalVote), required=True)


class Anchor(graphene.ObjectType):
    """An off-chain data object's hash anchored on chain."""

    data_id = graphene.String(required=True)
    sha256 = _hex_field("sha256", "SHA-256 of the data")
    metadata = graphene.String(required=True)
    institution_id = graphene.String(required=True)
    anchored_by = _hex_field("anchored_by", "key id of the signer")
    height = graphene.Int(required=True)


class Ownership(graphene.ObjectType):
    height = graphene.Int(required=True)
    position = graphene.Int(required=True)
    tx_id = _hex_field("tx_id", "transaction that changed the owner")
    owner_key_id = _hex_field("owner_key_id", "new owner")


class Asset(graphene.ObjectType):
    """An asset with its ownership history, oldest first."""

    asset_id = graphene.String(required=True)
    owner_key_id = _hex_field("owner_key_id", "current owner")
    metadata = graphene.String(required=True)
    registered_height = graphene.Int(required=True)
    history = graphene.List(graphene.NonNull(Ownership), required=True)


class L2Batch(graphene.ObjectType):
    """A Layer-2 batch committed on chain."""

    batch_id = graphene.String(required=True)
    merkle_root = _hex_field("merkle_root", "RFC 6962 root of the batch")
    leaf_count = graphene.Int(required=True)
    window_start_ms = graphene.Float(required=True)
    window_end_ms = graphene.Float(required=True)
    institution_id = graphene.String(required=True)
    committed_by = _hex_field("committed_by", "key id of the committer")
    height = graphene.Int(required=True)


def recent_tps(rate: Throughput) -> float:
    """``ChainSummary.recentTps`` of a throughput (both read paths use this, D65)."""
    return round(rate.tps, 3)


class ChainSummary(graphene.ObjectType):
    """Where the chain stands, as projected into this institution's database."""

    chain_id = graphene.String(required=True)
    height = graphene.Int(required=True, description="last block projected here")
    final_height = graphene.Int(required=True, description="last final block (= height)")
    last_hash = graphene.String(required=True)
    tx_count = graphene.BigInt(required=True)
    ok_count = graphene.BigInt(required=True)
    institution_count = graphene.Int(required=True)
    recent_tps = graphene.Float(required=True, description="tx/s over the last 20 blocks")


class Me(graphene.ObjectType):
    """The caller, from their token."""

    sub = graphene.String(required=True)
    institution = graphene.String(required=True)
    groups = graphene.List(graphene.NonNull(graphene.String), required=True)
    permissions = graphene.List(graphene.NonNull(graphene.String), required=True)
    expires_at = graphene.Int(required=True)

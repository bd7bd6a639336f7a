"""One definition per chain row (D42): the read model's dataclasses name the columns the
read side selects, the writer's columns cover them, and the GraphQL types expose them."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import state_types, types
from projections import read
from projections.read import model, queries
from projections.rows import APPEND_TABLES, STATE_TABLES, BatchRows, StateTable, model_columns

# Every chain table with a read model: (dataclass, fields the read side assembles from other
# rows, columns the writer stores that the read model does not expose, with the reason).
WRITTEN: dict[str, tuple[type, set[str], set[str]]] = {
    "blocks": (read.Block, set(), {"source_offset"}),  # where the certified copy was read
    "transactions": (read.Transaction, set(), {"envelope"}),  # signed bytes, for proofs
    "block_votes": (queries.CertificateVote, set(), {"height"}),  # the block's
    "proposal_votes": (read.ProposalVote, set(), {"proposal_id"}),  # the proposal's
    "asset_owners": (read.Ownership, set(), {"asset_id"}),  # the asset's
    "institutions": (read.Institution, {"operators"}, {"operator_key_ids", "updated_height"}),
    "keys": (read.Key, set(), {"updated_height"}),
    # the proposal's keys and raw vote lists (votes are served from proposal_votes)
    "proposals": (
        read.Proposal,
        {"votes"},
        {"governance_public_key", "operator_public_keys", "yes", "no", "updated_height"},
    ),
    "anchors": (read.Anchor, set(), set()),
    "l2_batches": (read.L2Batch, set(), set()),
    "assets": (read.Asset, {"history"}, {"updated_height"}),  # history: from asset_owners
}
# Tables without a read model, with the reason.
UNSERVED = {"key_activity": "IAM signer checks", "evidence": "audited, not served"}

# GraphQL type -> (read model dataclass, its fields exposed under another name).
GRAPHQL = {
    "Block": (read.Block, {}),
    "Transaction": (read.Transaction, {"tx_offset": "offset", "result_code": "result"}),
    "Identity": (read.Key, {}),
    "Institution": (read.Institution, {"institution_id": "id"}),
    "ProposalVote": (read.ProposalVote, {}),
    "Proposal": (read.Proposal, {"proposal_id": "id"}),
    "CertificateVote": (queries.CertificateVote, {}),
    "Anchor": (read.Anchor, {}),
    "Ownership": (read.Ownership, {}),
    "Asset": (read.Asset, {}),
    "L2Batch": (read.L2Batch, {}),
    "ChainSummary": (read.ChainSummary, {}),
}


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _writer_columns() -> dict[str, tuple[str, ...]]:
    out = dict(APPEND_TABLES)
    out.update((spec.table, spec.columns) for spec in STATE_TABLES.values())
    return out


def test_every_table_is_stated_once() -> None:
    assert set(_writer_columns()) == set(WRITTEN) | set(UNSERVED)


@pytest.mark.parametrize("table", sorted(WRITTEN))
def test_writer_columns_are_the_read_model_plus_stated_extras(table: str) -> None:
    cls, derived, extra = WRITTEN[table]
    assert derived <= set(_names(cls))
    assert set(_writer_columns()[table]) == (set(_names(cls)) - derived) | extra


def test_a_state_row_is_built_by_column_name() -> None:
    """The row of a record is its fields by the table's column names (array columns as lists,
    ``updated_height`` the height of the write), whatever order the record holds them in."""
    spec = STATE_TABLES["inst"]
    record = {
        "status": "ACTIVE",
        "operator_key_ids": (b"o1", b"o2"),
        "effective_height": 3,
        "governance_key_id": b"g",
        "institution_id": "alpha",
    }
    row = dict(zip(spec.columns, spec.row(record, 9), strict=True))
    assert row == {**record, "operator_key_ids": [b"o1", b"o2"], "updated_height": 9}
    with pytest.raises(KeyError):
        spec.row({k: v for k, v in record.items() if k != "status"}, 9)


def test_a_derived_field_must_exist() -> None:
    with pytest.raises(ValueError, match="no fields"):
        model_columns(read.Asset, derived={"owners"})


@pytest.mark.parametrize(
    ("query", "cls", "table"),
    [
        (model.BLOCK, read.Block, "chain.blocks"),
        (model.TX, read.Transaction, "chain.transactions"),
        (model.KEY, read.Key, "chain.keys"),
        (model.ANCHOR, read.Anchor, "chain.anchors"),
    ],
)
def test_selects_are_derived_from_the_dataclasses(query: str, cls: type, table: str) -> None:
    assert query == f"SELECT {', '.join(_names(cls))} FROM {table} "


@pytest.mark.parametrize("graphql_type", sorted(GRAPHQL))
def test_graphql_types_expose_every_read_model_field(graphql_type: str) -> None:
    cls, renamed = GRAPHQL[graphql_type]
    graphene_type = getattr(types, graphql_type, None) or getattr(state_types, graphql_type)
    exposed = set(graphene_type._meta.fields)
    wanted = {renamed.get(name, name) for name in _names(cls)}
    assert wanted <= exposed, sorted(wanted - exposed)


def test_rows_by_name_follow_the_table_columns() -> None:
    rows = BatchRows()
    columns = APPEND_TABLES["asset_owners"]
    rows.add_named("asset_owners", [{c: c.upper() for c in reversed(columns)}])
    assert rows.append["asset_owners"] == [tuple(c.upper() for c in columns)]


def test_rows_by_name_refuse_a_missing_or_extra_column() -> None:
    rows = BatchRows()
    full = dict.fromkeys(APPEND_TABLES["asset_owners"], 1)
    with pytest.raises(KeyError):
        rows.add_named("asset_owners", [{**{k: 1 for k in list(full)[1:]}, "other": 1}])
    with pytest.raises(ValueError, match="asset_owners"):
        rows.add_named("asset_owners", [{**full, "other": 1}])
    assert rows.append["asset_owners"] == []


def test_a_state_table_refuses_updated_height_before_a_record_column() -> None:
    with pytest.raises(ValueError, match="updated_height last"):
        StateTable("t", ("updated_height", "a", "b"), ("a",), lambda rest: (rest,))

"""One definition per chain row (D42): the read model's dataclasses name the columns the
read side selects, the writer's columns cover them, and the GraphQL types expose them."""

from __future__ import annotations

import dataclasses

import pytest

from gateway import types
from projections import read
from projections.read import model
from projections.rows import APPEND_TABLES, BatchRows

# Columns the writer stores that the read model does not expose, with the reason.
WRITER_ONLY = {
    "blocks": {"source_offset"},  # where the certified copy was read (the audit)
    "transactions": {"envelope"},  # the signed bytes, read by ``accepted_tx`` (proofs)
}

# GraphQL type -> (read model dataclass, its fields exposed under another name).
GRAPHQL = {
    "Block": (read.Block, {}),
    "Transaction": (read.Transaction, {"tx_offset": "offset", "result_code": "result"}),
    "Identity": (read.Key, {}),
    "Institution": (read.Institution, {"institution_id": "id"}),
    "ProposalVote": (read.ProposalVote, {}),
    "Proposal": (read.Proposal, {"proposal_id": "id"}),
    "Anchor": (read.Anchor, {}),
    "Ownership": (read.Ownership, {}),
    "Asset": (read.Asset, {}),
    "L2Batch": (read.L2Batch, {}),
    "ChainSummary": (read.ChainSummary, {}),
}


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize(
    ("table", "cls"), [("blocks", read.Block), ("transactions", read.Transaction)]
)
def test_writer_columns_are_the_read_model_plus_stated_extras(table: str, cls: type) -> None:
    assert set(APPEND_TABLES[table]) == set(_names(cls)) | WRITER_ONLY[table]


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
    exposed = set(getattr(types, graphql_type)._meta.fields)
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

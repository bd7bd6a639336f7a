"""``gateway.field_permissions``: every mutation is listed with the permission it needs."""

from __future__ import annotations

from gateway.field_permissions import ADMIN, PERMISSIONS, READ, required_permission
from gateway.schema import SCHEMA


def test_every_mutation_of_the_schema_is_in_the_table() -> None:
    """A mutation missing from the table would need only ``chain:read``: the table must name
    each one (and nothing that the schema does not have)."""
    mutations = set(SCHEMA.graphql_schema.mutation_type.fields)
    assert set(PERMISSIONS["mutation"]) == mutations


def test_queries_need_chain_read_but_me_and_introspection() -> None:
    for field in SCHEMA.graphql_schema.query_type.fields:
        expected = "" if field == "me" else READ
        assert required_permission("query", field) == expected, field
    assert required_permission("query", "__schema") is None
    assert required_permission("mutation", "login") is None
    assert required_permission("mutation", "castVote") == ADMIN

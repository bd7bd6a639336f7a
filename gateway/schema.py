"""The GraphQL schema: queries over the chain, mutations, the new-block subscription.

Theory of operation
-------------------
* Who may call what is decided once per request, before execution, from the root fields
  (:data:`PERMISSIONS`; see :func:`gateway.app`): chain queries need ``chain:read``,
  submitting ``chain:write``, user administration and governance ``admin``; ``login`` and
  ``bootstrapAdmin`` (which needs the one-time setup credential) are public and ``me`` needs
  any valid token. Mutation resolvers check again (defense in depth).
* Governance mutations (``proposeMember``, ``proposeRemoval``, ``castVote``) are signed with
  the institution's governance key by :class:`gateway.governance.Governance`, which the app
  passes as the root value of mutations (None: the gateway has no keystore).
* Every mutation returns a payload with either its result or a typed ``error``
  (``code`` + ``message``); nothing is raised to the client from a mutation.
* The subscription field ``newBlock`` is executed by :mod:`gateway.live` once per new final
  block, with that block as the root value.

The roots live in :mod:`gateway.query_root` and :mod:`gateway.mutation_root`, the permission
table in :mod:`gateway.field_permissions`, the object types in :mod:`gateway.types`.
"""

# mypy: disallow-subclassing-any=False
from __future__ import annotations

import graphene

from gateway.field_permissions import PERMISSIONS, required_permission
from gateway.mutation_root import Mutation
from gateway.query_root import Query
from gateway.types import Block, Info
from projections import read

__all__ = ["PERMISSIONS", "SCHEMA", "Mutation", "Query", "required_permission"]


class Subscription(graphene.ObjectType):
    new_block = graphene.Field(
        Block, required=True, description="every new final block, oldest first"
    )

    @staticmethod
    def resolve_new_block(root: read.Block, _info: Info) -> read.Block:
        return root


SCHEMA = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)

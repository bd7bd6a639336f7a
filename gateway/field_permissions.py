"""Who may call which GraphQL root field: the table the gateway checks once per request,
before execution (:func:`gateway.engine`), and the mutation resolvers check again.

Chain queries need ``chain:read``, submitting ``chain:write``, user administration and
governance ``admin``; ``login`` and ``bootstrapAdmin`` (which needs the one-time setup
credential) are public and ``me`` needs any valid token.
"""

from __future__ import annotations

READ, WRITE, ADMIN, ANY_TOKEN = "chain:read", "chain:write", "admin", ""
#: Root field -> permission (``""``: any valid token; ``None``: public).
PERMISSIONS: dict[str, dict[str, str | None]] = {
    "query": {"me": ANY_TOKEN},  # every other query field: chain:read
    "mutation": {
        "login": None,
        "submitTransaction": WRITE,
        "createUser": ADMIN,
        "disableUser": ADMIN,
        "forgetUser": ADMIN,
        "createGroup": ADMIN,
        "addGroupMember": ADMIN,
        "grantPermission": ADMIN,
        "revokePermission": ADMIN,
        "revokeAllTokens": ADMIN,
        "bootstrapAdmin": None,
        "proposeMember": ADMIN,
        "proposeRemoval": ADMIN,
        "castVote": ADMIN,
    },
    "subscription": {},
}


def required_permission(operation: str, field: str) -> str | None:
    """The permission a root field needs (None: public, "": any valid token)."""
    if field.startswith("__"):
        return None  # introspection describes the schema, not the chain
    table = PERMISSIONS.get(operation, {})
    return table.get(field, READ)

"""Creating an institution's first administrator: the setup credential and the CLI path.

``pantheon up`` calls :func:`ensure_setup_credential` and prints what it returns (once per
call, never logged): a random credential whose SHA-256 alone is stored in the institution's
database, sealed under its IAM master key (D70: a hash written into the table opens
nothing). Whoever holds it calls :meth:`IamService.bootstrap_admin` (through the gateway) to
create the institution administrator; the credential is then spent. An operator with access
to the database and the master key can instead run :func:`create_admin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from gateway.auth.crypto import MasterKey
from gateway.iam import store
from gateway.iam.errors import AlreadyBootstrapped
from gateway.iam.service import IamService
from projections import iam as iam_projection


def ensure_setup_credential(dsn: str, institution: str, master_key: MasterKey) -> str | None:
    """A fresh one-time setup credential to print, or None if the administrator exists.

    Each call replaces an unused earlier credential (the old one can no longer be used).
    """
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        iam_projection.migrate(conn)
        with conn.transaction():
            if store.has_owner(conn):
                return None
            return store.new_setup_credential(conn, master_key, institution)


def create_admin(
    *,
    bootstrap: str,
    dsn: str,
    institution: str,
    master_key: MasterKey,
    login: str,
    password: str,
    profile: Mapping[str, str] | None = None,
    **service_options: Any,
) -> str:
    """CLI path: create the institution administrator directly; returns their user id.

    Needs the IAM projection running (the call waits until it applied the events).
    """
    token = ensure_setup_credential(dsn, institution, master_key)
    if token is None:
        raise AlreadyBootstrapped(institution)
    service = IamService(
        bootstrap=bootstrap,
        dsn=dsn,
        institution=institution,
        master_key=master_key,
        **service_options,
    )
    try:
        return service.bootstrap_admin(token, login, password, profile or {})
    finally:
        service.close()

"""The IAM service key: what signs every event an institution's gateway writes (D21).

* :class:`IamSigner` wraps each IAM event (single-object bytes) in a ``SignedIamEvent``
  signed by the institution's IAM SERVICE key (:func:`ledger.iam_events.sign_event`), with a
  ``key_height`` from its height source. :class:`~gateway.iam.service.IamService` signs in
  one place (``_produce``), which every producer to the IAM topic goes through.
* :func:`chain_key_height` is the production height source: the height of the chain
  projected in the gateway's database, provided the key is an active SERVICE key of the
  institution there (``chain.key_activity``); otherwise :class:`KeyNotActive` and nothing is
  produced. Readers accept the event once their own certified chain reaches that height.
* The key comes from a 0600 key file (:func:`infra.keystore.load_key` format), never from a
  command line; ``pantheon up`` creates and registers one per institution.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from gateway.iam.errors import NotApplied
from ledger.iam_events import SERVICE_ROLE, sign_event
from ledger.keys import KeyPair


class KeyNotActive(NotApplied):
    """The IAM key is not (yet, or any more) an active SERVICE key of the institution."""


class IamKeyFileError(ValueError):
    """The IAM key file is missing, malformed or readable by others."""


def load_iam_key(path: Path) -> KeyPair:
    """The key pair of a 0600 key file (``{"seed": hex, ...}``); refuses looser modes."""
    try:
        mode = path.stat().st_mode
        record = json.loads(path.read_text())
        pair = KeyPair.from_seed(bytes.fromhex(record["seed"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IamKeyFileError(f"{path} is not a readable key file: {exc}") from exc
    if mode & 0o077:
        raise IamKeyFileError(f"{path} is readable by others (mode {mode & 0o777:o}); chmod 600")
    return pair


class IamSigner:
    """Signs IAM events with one key at the height its source gives (see module docstring)."""

    def __init__(self, key: KeyPair, key_height: Callable[[], int]) -> None:
        self.key = key
        self._key_height = key_height

    @property
    def key_id(self) -> bytes:
        return self.key.key_id

    def signing(self) -> Callable[[str, bytes], bytes]:
        """A signing function for one batch of events (the key height is read once)."""
        height = self._key_height()
        return lambda institution, event: sign_event(self.key, institution, height, event)


_KEY_AT = (
    "SELECT m.height, a.institution_id, a.role, a.active FROM chain.meta m "
    "LEFT JOIN LATERAL (SELECT institution_id, role, active FROM chain.key_activity "
    "WHERE key_id = %s AND height <= m.height ORDER BY height DESC LIMIT 1) a ON true"
)


def chain_key_height(dsn: str, institution: str, key_id: bytes) -> Callable[[], int]:
    """Production height source: the projected chain's height, once the key is an active
    SERVICE key of ``institution`` there (:class:`KeyNotActive` otherwise)."""

    def height() -> int:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                row: Any = conn.execute(_KEY_AT, (key_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        if row is None or row[1] != institution or row[2] != SERVICE_ROLE or not row[3]:
            raise KeyNotActive(
                f"the IAM key {key_id.hex()[:16]} is not an active SERVICE key of "
                f"{institution} on the projected chain"
            )
        return int(row[0])

    return height

"""Secrets the gateway reads back from PostgreSQL, bound to the master key (D70).

Theory of operation
-------------------
PostgreSQL is not trusted (``docs/security.md``): a value the gateway authenticates with is
believed only if it opens under the institution's master key with a purpose that names the
row's identity, so a value written into the table, or copied from another row, is refused.

* A service account's credential hash is sealed (``menc:v1:``) before its
  ``ServiceAccountCreated`` event is produced, bound to the institution and the account id:
  the signed event, the projected row and a rebuild all carry the same sealed text, and the
  audit compares it like any column. A row written before D70 holds a bare scrypt hash and
  is refused: the account must be re-issued.
* The setup credential's SHA-256 is sealed bound to the institution; consuming it erases the
  sealed value, so resetting ``consumed_at`` revives nothing.
* A value that does not open raises :class:`~gateway.iam.errors.TamperedRow`; the caller
  logs it (:func:`log_tampered`) and refuses exactly as for a wrong secret, changing nothing.
"""

from __future__ import annotations

import logging

from gateway.auth.crypto import (
    CryptoError,
    MasterKey,
    open_text_with_master,
    open_with_master,
    seal_text_with_master,
    seal_with_master,
)
from gateway.iam.errors import TamperedRow

log = logging.getLogger("pantheon.iam")


def _credential_purpose(institution: str, account_id: str) -> str:
    return f"service-credential:{institution}:{account_id}"


def _setup_purpose(institution: str) -> str:
    return f"setup-credential:{institution}"


def seal_credential(master: MasterKey, institution: str, account_id: str, hashed: str) -> str:
    """A service account's credential hash as the text its event and row carry."""
    return seal_text_with_master(master, _credential_purpose(institution, account_id), hashed)


def open_credential(master: MasterKey, institution: str, account_id: str, stored: str) -> str:
    """The credential hash of ``account_id``; :class:`TamperedRow` unless ``stored`` was
    sealed by this institution's gateway for this account."""
    try:
        return open_text_with_master(master, _credential_purpose(institution, account_id), stored)
    except CryptoError as exc:
        raise TamperedRow("iam_service_accounts", account_id, str(exc)) from None


def seal_setup_digest(master: MasterKey, institution: str, digest: bytes) -> bytes:
    """The setup credential's digest as ``iam_setup.token_hash`` stores it."""
    return seal_with_master(master, _setup_purpose(institution), digest)


def open_setup_digest(master: MasterKey, institution: str, sealed: bytes) -> bytes:
    """Inverse of :func:`seal_setup_digest`; :class:`TamperedRow` if it does not open."""
    try:
        return open_with_master(master, _setup_purpose(institution), sealed)
    except CryptoError as exc:
        raise TamperedRow("iam_setup", institution, str(exc)) from None


def log_tampered(institution: str, exc: TamperedRow) -> None:
    """Say which row was refused (the caller then refuses as for a wrong secret)."""
    log.warning(
        "IAM row refused: it does not open under the master key",
        extra={"institution": institution, "table": exc.table, "key": exc.key, "why": exc.why},
    )

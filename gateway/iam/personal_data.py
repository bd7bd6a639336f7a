"""The IAM service's sealed personal data: each user's data key, password hash and profile.

Secrets never reach the IAM topic in clear: a password becomes an scrypt hash, then the hash
and the personal fields are sealed under the user's data key, created in ``iam_data_keys``
(wrapped under the KEK, :mod:`gateway.iam.data_keys`) before the event that uses it is
produced. A refused command leaves no orphan key (:meth:`PersonalData.discard_if_refused`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from psycopg_pool import ConnectionPool

from gateway.auth import passwords
from gateway.auth.crypto import (
    CryptoError,
    DataKey,
    open_profile,
    open_text,
    seal_profile,
    seal_text,
)
from gateway.iam import data_keys, sealed_rows
from gateway.iam.errors import (
    KeysUnavailable,
    NotApplied,
    NotAuthorized,
    TamperedRow,
    UnknownUser,
)
from gateway.iam.kek import KekStore
from gateway.iam.sessions import PASSWORD_FIELD
from gateway.iam.view import IamView


class PersonalData:
    """Sealing and opening one institution's per-user secrets."""

    def __init__(
        self,
        *,
        pool: ConnectionPool[Any],
        keys: KekStore,
        institution: str,
        password_params: passwords.ScryptParams,
        view: IamView,
    ) -> None:
        """``view``: a user's current sealed password hash and profile come from the signed
        topic (the IAM view, D74), not from ``iam_users``."""
        self._pool = pool
        self._view = view
        self.keys = keys
        self.institution = institution
        self._params = password_params

    def seal_new_user(
        self, user_id: str, password: str, profile: Mapping[str, str]
    ) -> tuple[str, bytes, str]:
        """A new data key for ``user_id``; (sealed password hash, sealed profile, key id)."""
        with self._pool.connection() as conn:
            dk = data_keys.create_data_key(conn, self.keys, self.institution, user_id)
        hashed = passwords.hash_password(password, self._params)
        return (
            seal_text(dk, self.institution, user_id, PASSWORD_FIELD, hashed),
            seal_profile(dk, self.institution, user_id, profile),
            dk.key_id,
        )

    @contextmanager
    def discard_if_refused(self, user_id: str) -> Iterator[None]:
        """Delete ``user_id``'s new data key if the block raises. NotApplied means the event
        may be on the topic: the key must then stay."""
        try:
            yield
        except NotApplied:
            raise
        except Exception:
            with self._pool.connection() as conn:
                data_keys.delete_data_key(conn, user_id)
            raise

    def new_password(
        self, user_id: str, new_password: str, *, own: bool, old_password: str | None
    ) -> str:
        """``new_password`` hashed and sealed under the user's key; one's ``own`` password
        only if ``old_password`` is the current one (:class:`NotAuthorized` otherwise)."""
        sealed = self._view.sealed_password(user_id)
        with self._pool.connection() as conn:
            dk = data_keys.get_data_key(conn, self.keys, self.institution, user_id)
        if sealed is None or dk is None:
            raise UnknownUser(user_id)
        if own and (old_password is None or not self._verify(user_id, dk, sealed, old_password)):
            raise NotAuthorized("the current password is wrong")
        hashed = passwords.hash_password(new_password, self._params)
        return seal_text(dk, self.institution, user_id, PASSWORD_FIELD, hashed)

    def _verify(self, user_id: str, dk: DataKey, sealed: str, password: str) -> bool:
        """Whether ``password`` is the one ``sealed`` holds; False (logged) if the row does not
        open under the user's data key (D70)."""
        try:
            stored = open_text(dk, self.institution, user_id, PASSWORD_FIELD, sealed)
        except CryptoError as exc:
            sealed_rows.log_tampered(self.institution, TamperedRow("iam_users", user_id, str(exc)))
            return False
        return passwords.verify_password(password, stored)

    def seal_profile(self, user_id: str, profile: Mapping[str, str]) -> bytes:
        """``profile`` sealed under the user's data key."""
        dk = self.data_key(user_id)
        if dk is None:
            raise UnknownUser(user_id)
        return seal_profile(dk, self.institution, user_id, profile)

    def profile(self, user_id: str) -> dict[str, str] | None:
        """The user's personal fields in clear; None once forgotten."""
        known, sealed = self._view.sealed_profile(user_id)  # the signed topic's, not the row's
        if not known:
            raise UnknownUser(user_id)
        with self._pool.connection() as conn:
            dk = data_keys.get_data_key(conn, self.keys, self.institution, user_id)
        if sealed is None or dk is None:
            return None
        return open_profile(dk, self.institution, user_id, sealed)

    def data_key(self, user_id: str) -> DataKey | None:
        """The user's data key; None once the user is forgotten."""
        with self._pool.connection() as conn:
            return data_keys.get_data_key(conn, self.keys, self.institution, user_id)

    def shred(self, user_ids: tuple[str, ...], *, if_held: bool = False) -> dict[str, str]:
        """Destroy the data keys of ``user_ids`` by a KEK rotation: ``{user id: destroyed key
        id}``. With ``if_held``, only if one of them still has a key (no rotation else)."""
        with self._pool.connection() as conn:
            if if_held:
                user_ids = data_keys.with_keys(conn, user_ids)
                if not user_ids:
                    return {}
            try:
                gone, _, _ = data_keys.rotate_kek(conn, self.keys, user_ids)
            except CryptoError as exc:
                raise KeysUnavailable(str(exc)) from None
        return gone

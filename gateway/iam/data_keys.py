"""Per-user data keys, wrapped under the institution's key-encryption key (D25).

Theory of operation
-------------------
* :func:`create_data_key` stores a new key wrapped by the institution's current
  key-encryption key (:mod:`gateway.iam.kek`, D25) *before* any event that uses it is
  produced; :func:`get_data_key` unwraps it (also the API for other owners of per-user
  ciphertexts, e.g. stored objects); :func:`rotate_kek` forgets users (crypto-shredding): it
  deletes their rows, leaves a tombstone (``iam_forgotten_keys``) that
  :func:`create_data_key` refuses, and re-wraps every other data key under a new KEK in one
  transaction, then destroys the old KEK file. :func:`delete_data_key` only deletes (a
  refused creation).
"""

from __future__ import annotations

from gateway.auth.crypto import (
    DataKey,
    Kek,
    MasterKey,
    new_data_key,
    new_kek,
    unwrap_data_key,
    wrap_data_key,
)
from gateway.iam.kek import KekMissing, KekStore
from runtime.pg import Conn


class KeyForgotten(ValueError):
    """The user was forgotten: no data key may ever be created for them again (D25)."""


def current_kek_id(conn: Conn) -> str | None:
    """The id of the institution's current KEK (None before the first one)."""
    row = conn.execute("SELECT kek_id FROM iam_kek").fetchone()
    return None if row is None else str(row[0])


def _wrapper(keys: KekStore, kek_id: str) -> MasterKey | Kek:
    if kek_id == "":
        return keys.master
    if keys.legacy:
        raise KekMissing(f"data keys are wrapped under {kek_id}, but no KEK directory is set")
    return keys.find(kek_id)


def ensure_kek(conn: Conn, keys: KekStore) -> str | None:
    """Make sure the institution has a current KEK and its files are consistent (finishing an
    interrupted rotation); the first call re-wraps master-wrapped rows. Returns its id."""
    if keys.legacy:
        return current_kek_id(conn)
    current = current_kek_id(conn)
    if current is None:
        return rotate_kek(conn, keys, forget=())[1]
    with keys.lock():
        keys.recover(current)
    return current


def create_data_key(conn: Conn, keys: KekStore, institution: str, user_id: str) -> DataKey:
    """A new data key for ``user_id``, stored wrapped under the current KEK."""
    dk = new_data_key()
    if not keys.legacy and current_kek_id(conn) is None:
        ensure_kek(conn, keys)
    with conn.transaction():
        # A rotation holds iam_kek in EXCLUSIVE mode: wait for it, then wrap under its KEK.
        conn.execute("LOCK TABLE iam_kek IN ROW SHARE MODE")
        kek_id = "" if keys.legacy else (current_kek_id(conn) or "")
        if keys.legacy and current_kek_id(conn) is not None:
            raise KekMissing("this database wraps data keys under a KEK; give a KEK directory")
        # The tombstone is committed with the rotation that destroyed the key (whose lock we
        # just waited for): a forgotten user never gets a fresh key, whatever the projection
        # says yet.
        if conn.execute(
            "SELECT 1 FROM iam_forgotten_keys WHERE user_id = %s", (user_id,)
        ).fetchone():
            raise KeyForgotten(f"{user_id} was forgotten; no data key can be created")
        conn.execute(
            "INSERT INTO iam_data_keys (user_id, key_id, kek_id, wrapped) VALUES (%s, %s, %s, %s)",
            (
                user_id,
                dk.key_id,
                kek_id,
                wrap_data_key(_wrapper(keys, kek_id), institution, user_id, dk),
            ),
        )
    return dk


def get_data_key(
    conn: Conn, keys: KekStore | MasterKey, institution: str, user_id: str
) -> DataKey | None:
    """The user's data key, or None once it was destroyed (the user was forgotten).

    ``keys`` is the service's :class:`KekStore` (a bare master key only opens rows written
    before D25, or in the test-only mode without a KEK directory)."""
    if isinstance(keys, MasterKey):
        keys = KekStore(None, keys, institution)
    for attempt in (0, 1):
        row = conn.execute(
            "SELECT key_id, kek_id, wrapped FROM iam_data_keys WHERE user_id = %s", (user_id,)
        ).fetchone()
        if row is None:
            return None
        try:
            wrapper = _wrapper(keys, str(row[1]))
        except KekMissing:
            if attempt:
                raise
            continue  # a rotation committed between the read and the file lookup: read again
        return unwrap_data_key(wrapper, institution, user_id, str(row[0]), bytes(row[2]))
    return None


def delete_data_key(conn: Conn, user_id: str) -> str | None:
    """Delete the user's data key row; returns its id (None if it was already gone).

    Only for a key that never sealed anything on the topic: a deleted row survives in
    PostgreSQL's WAL and dead tuples, so forgetting uses :func:`rotate_kek`."""
    row = conn.execute(
        "DELETE FROM iam_data_keys WHERE user_id = %s RETURNING key_id", (user_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def with_keys(conn: Conn, user_ids: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``user_ids`` whose data key still exists (e.g. forgotten users after a
    restore of a dump taken before the forget: :func:`rotate_kek` must shred them). Who is
    forgotten is the caller's to say (the IAM view, D74), never ``iam_users.forgotten``."""
    rows = conn.execute(
        "SELECT user_id FROM iam_data_keys WHERE user_id = ANY(%s) ORDER BY user_id",
        (list(user_ids),),
    )
    return tuple(str(r[0]) for r in rows)


def rotate_kek(
    conn: Conn,
    keys: KekStore,
    forget: tuple[str, ...] | list[str],
) -> tuple[dict[str, str], str | None, int]:
    """Crypto-shred the data keys of ``forget``: delete their rows and re-wrap every other data key
    under a new KEK in one transaction, then destroy the old KEK file. ``conn`` must be
    outside a transaction.

    Returns ``({user id: destroyed key id}, new KEK id, number of re-wrapped keys)``. In the
    test-only legacy mode (no KEK directory) the rows are only deleted.
    """
    institution = keys.institution
    if keys.legacy:
        with conn.transaction():
            conn.execute("LOCK TABLE iam_kek IN EXCLUSIVE MODE")
            gone = _shred(conn, forget)
        return gone, None, 0
    with keys.lock():
        new = new_kek()
        with conn.transaction():
            conn.execute("LOCK TABLE iam_kek IN EXCLUSIVE MODE")
            conn.execute("LOCK TABLE iam_data_keys IN EXCLUSIVE MODE")
            old_id = current_kek_id(conn)
            if old_id is not None:
                keys.recover(old_id)
            gone = _shred(conn, forget)
            keys.stage(new)
            users: list[str] = []
            wrapped: list[bytes] = []
            for uid, key_id, kek_id, blob in conn.execute(
                "SELECT user_id, key_id, kek_id, wrapped FROM iam_data_keys"
            ).fetchall():
                dk = unwrap_data_key(
                    _wrapper(keys, str(kek_id)), institution, str(uid), str(key_id), bytes(blob)
                )
                users.append(str(uid))
                wrapped.append(wrap_data_key(new, institution, str(uid), dk))
            conn.execute(
                "UPDATE iam_data_keys d SET wrapped = v.w, kek_id = %s "
                "FROM unnest(%s::text[], %s::bytea[]) AS v(u, w) WHERE d.user_id = v.u",
                (new.kek_id, users, wrapped),
            )
            conn.execute(
                "INSERT INTO iam_kek (only_row, kek_id) VALUES (true, %s) ON CONFLICT (only_row) "
                "DO UPDATE SET kek_id = EXCLUDED.kek_id, rotated_at = now()",
                (new.kek_id,),
            )
        # Committed: the new KEK is current. Destroy the old one (a crash before this line is
        # finished by KekStore.recover, run by ensure_kek and before every rotation).
        keys.install(new)
    return gone, new.kek_id, len(users)


def _shred(conn: Conn, forget: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Delete the data keys of ``forget`` and tombstone them all: ``{user id: destroyed key
    id}``."""
    gone = {
        str(r[0]): str(r[1])
        for r in conn.execute(
            "DELETE FROM iam_data_keys WHERE user_id = ANY(%s) RETURNING user_id, key_id",
            (list(forget),),
        )
    }
    _tombstone(conn, {*forget, *gone})
    return gone


def _tombstone(conn: Conn, users: set[str]) -> None:
    """Mark ``users`` forgotten for :func:`create_data_key` (in the rotation's transaction)."""
    if users:
        conn.execute(
            "INSERT INTO iam_forgotten_keys (user_id) SELECT unnest(%s::text[]) "
            "ON CONFLICT DO NOTHING",
            (sorted(users),),
        )

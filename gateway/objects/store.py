"""The proxy's tables: uploads and sealed chunks (gateway-owned), the projected object and
grant rows, and the owners' data keys."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from gateway.auth.crypto import DataKey
from gateway.errors import BodyTooLarge
from gateway.iam import data_keys
from gateway.iam.kek import KekStore
from gateway.object_crypto import chunk_aad, chunk_digest, chunk_root, new_upload_id, seal_chunk
from gateway.objects.errors import ObjectExists
from gateway.objects.policy import Policy
from projections.migrate import apply_migrations
from projections.objects import GRANT_COLUMNS, OBJECT_COLUMNS

MIGRATIONS = Path(__file__).resolve().parents[2] / "projections" / "migrations" / "objects"
NAMESPACE = "objects"
DEFAULT_MAX_OBJECT_BYTES = 16 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024


# -- data keys -------------------------------------------------------------------------------------
class ObjectKeys:
    """The owners' data keys (``iam_data_keys``, wrapped under the institution's KEK, D25)."""

    def __init__(self, pool: ConnectionPool[Any], keys: KekStore) -> None:
        self.pool = pool
        self._keys = keys
        self.institution = keys.institution

    def owner_key(self, owner: str, *, create: bool = False) -> DataKey | None:
        """The owner's data key; with ``create``, a new one if they have none and were not
        forgotten. None once it was destroyed."""
        with self.pool.connection() as conn:
            dk = data_keys.get_data_key(conn, self._keys, self.institution, owner)
            if dk is not None or not create:
                return dk
            row = conn.execute(
                "SELECT forgotten FROM iam_users WHERE user_id = %s", (owner,)
            ).fetchone()
            if row is not None and row[0]:
                return None
            try:
                return data_keys.create_data_key(conn, self._keys, self.institution, owner)
            except data_keys.KeyForgotten:  # forgotten, UserForgotten not projected yet
                return None
            except psycopg.errors.UniqueViolation:  # a concurrent first upload made it
                return data_keys.get_data_key(conn, self._keys, self.institution, owner)

    def key_holder(self, key_id: str) -> str | None:
        """The principal whose data key has id ``key_id`` (None: no such key)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT user_id FROM iam_data_keys WHERE key_id = %s", (key_id,)
            ).fetchone()
        return None if row is None else str(row[0])


def metadata_field(data_id: str) -> str:
    """The sealed-field name of an object's private metadata."""
    return f"object-metadata:{data_id}"


# -- the store -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject:
    """An upload's row (no content); ``metadata`` is sealed under the owner's data key."""

    data_id: str
    sha256: bytes
    size: int
    content_type: str
    metadata: str
    owner: str
    policy: Policy
    status: str
    tx_id: bytes | None
    height: int | None
    data_key_id: str | None = None
    upload_id: str | None = None
    chunk_count: int = 0
    chunk_root: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRow:
    """A projected ``objects.objects`` row and its grant rows (as read: not yet verified)."""

    data_id: str
    owner: str
    sha256: bytes
    size: int
    content_type: str
    metadata: str
    data_key_id: str
    upload_id: str
    chunk_count: int
    chunk_root: bytes
    anchor_tx: bytes
    anchor_height: int
    mac: bytes
    grants: tuple[tuple[str, str, bytes], ...]  # (subject, upload id, mac)


_ROW = (
    "SELECT data_id, sha256, size, content_type, metadata, owner, groups, grants, status, "
    "tx_id, height, data_key_id, upload_id, chunk_count, chunk_root FROM objects.uploads "
)


def _row(r: Sequence[Any]) -> StoredObject:
    return StoredObject(
        data_id=r[0],
        sha256=bytes(r[1]) if r[1] is not None else b"",
        size=int(r[2]),
        content_type=r[3],
        metadata=r[4],
        owner=r[5],
        policy=Policy(groups=tuple(r[6]), users=tuple(r[7])),
        status=r[8],
        tx_id=None if r[9] is None else bytes(r[9]),
        height=None if r[10] is None else int(r[10]),
        data_key_id=r[11],
        upload_id=r[12],
        chunk_count=int(r[13] or 0),
        chunk_root=b"" if r[14] is None else bytes(r[14]),
    )


class ObjectStore:
    """``objects.uploads`` and ``objects.chunks`` (gateway-owned) and the projected
    ``objects.objects`` / ``objects.grants`` of one institution's database."""

    def __init__(
        self, pool: ConnectionPool[Any], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        self.pool = pool
        self.chunk_bytes = chunk_bytes

    def migrate(self) -> list[str]:
        """Create or upgrade the store's tables (idempotent, under a lock)."""
        with self.pool.connection() as conn:
            return apply_migrations(conn, NAMESPACE, MIGRATIONS)

    def get(self, data_id: str) -> StoredObject | None:
        """The upload of ``data_id`` (committed ones only)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                _ROW + "WHERE data_id = %s AND status <> 'uploading'", (data_id,)
            ).fetchone()
        return None if row is None else _row(row)

    def projected(self, data_id: str) -> ObjectRow | None:
        """The projected metadata row of ``data_id`` with its grants (one snapshot)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            r = conn.execute(
                f"SELECT {', '.join(OBJECT_COLUMNS)} FROM objects.objects WHERE data_id = %s",
                (data_id,),
            ).fetchone()
            if r is None:
                return None
            grants = conn.execute(
                f"SELECT {', '.join(GRANT_COLUMNS)} FROM objects.grants WHERE data_id = %s "
                "ORDER BY subject",
                (data_id,),
            ).fetchall()
        return ObjectRow(
            data_id=r[0],
            owner=r[1],
            sha256=bytes(r[2]),
            size=int(r[3]),
            content_type=r[4],
            metadata=r[5],
            data_key_id=r[6],
            upload_id=r[7],
            chunk_count=int(r[8]),
            chunk_root=bytes(r[9]),
            anchor_tx=bytes(r[10]),
            anchor_height=int(r[11]),
            mac=bytes(r[12]),
            grants=tuple((g[1], g[2], bytes(g[3])) for g in grants),
        )

    def chunk_digests(self, data_id: str) -> list[tuple[int, bytes | None]]:
        """``(seq, digest)`` of every stored chunk, in order."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT seq, digest FROM objects.chunks WHERE data_id = %s ORDER BY seq",
                (data_id,),
            ).fetchall()
        return [(int(r[0]), None if r[1] is None else bytes(r[1])) for r in rows]

    def chunk(self, data_id: str, seq: int) -> bytes | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT chunk FROM objects.chunks WHERE data_id = %s AND seq = %s", (data_id, seq)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def write(
        self,
        *,
        data_id: str,
        content_type: str,
        metadata: str,
        owner: str,
        policy: Policy,
        pull: Callable[[], bytes | None],
        limit: int,
        may_replace: Callable[[StoredObject], bool],
        key: DataKey,
        institution: str,
    ) -> StoredObject:
        """Stream the content from ``pull`` (None at the end) into a new ``pending`` upload,
        every chunk sealed under ``key`` (the owner's data key); ``metadata`` is already
        sealed.

        An existing non-anchored upload of that id is replaced if ``may_replace`` says so;
        otherwise, or if it is anchored, :class:`ObjectExists`."""
        digest, size, seq = hashlib.sha256(), 0, 0
        upload_id = new_upload_id()
        digests: list[bytes] = []
        buffer = bytearray()
        with self.pool.connection() as conn:
            try:
                with conn.transaction():
                    row = conn.execute(
                        _ROW + "WHERE data_id = %s FOR UPDATE", (data_id,)
                    ).fetchone()
                    if row is not None:
                        existing = _row(row)
                        if existing.status == "anchored" or not may_replace(existing):
                            raise ObjectExists(f"object {data_id!r} exists", dataId=data_id)
                        conn.execute("DELETE FROM objects.uploads WHERE data_id = %s", (data_id,))
                    conn.execute(
                        "INSERT INTO objects.uploads (data_id, content_type, metadata, owner, "
                        "groups, grants, status, data_key_id, upload_id) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 'uploading', %s, %s)",
                        (
                            data_id,
                            content_type,
                            metadata,
                            owner,
                            list(policy.groups),
                            list(policy.users),
                            key.key_id,
                            upload_id,
                        ),
                    )

                    def flush(data: bytes) -> None:
                        nonlocal seq
                        aad = chunk_aad(institution, owner, key.key_id, data_id, upload_id, seq)
                        sealed = seal_chunk(key, aad, data)
                        digests.append(chunk_digest(sealed))
                        conn.execute(
                            "INSERT INTO objects.chunks (data_id, seq, chunk, digest) "
                            "VALUES (%s, %s, %s, %s)",
                            (data_id, seq, sealed, digests[-1]),
                        )
                        seq += 1

                    while (piece := pull()) is not None:
                        size += len(piece)
                        if size > limit:
                            raise BodyTooLarge(f"the object exceeds {limit} bytes", limit=limit)
                        digest.update(piece)
                        buffer += piece
                        while len(buffer) >= self.chunk_bytes:
                            flush(bytes(buffer[: self.chunk_bytes]))
                            del buffer[: self.chunk_bytes]
                    if buffer:
                        flush(bytes(buffer))
                    conn.execute(
                        "UPDATE objects.uploads SET sha256 = %s, size = %s, status = 'pending', "
                        "chunk_count = %s, chunk_root = %s WHERE data_id = %s",
                        (digest.digest(), size, seq, chunk_root(digests), data_id),
                    )
            except psycopg.errors.UniqueViolation:
                raise ObjectExists(
                    f"object {data_id!r} is being uploaded by another request", dataId=data_id
                ) from None
        return StoredObject(
            data_id=data_id,
            sha256=digest.digest(),
            size=size,
            content_type=content_type,
            metadata=metadata,
            owner=owner,
            policy=policy,
            status="pending",
            tx_id=None,
            height=None,
            data_key_id=key.key_id,
            upload_id=upload_id,
            chunk_count=seq,
            chunk_root=chunk_root(digests),
        )

    def mark_anchored(self, data_id: str, tx_id: bytes, height: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE objects.uploads SET status = 'anchored', tx_id = %s, height = %s, "
                "anchored_at = now() WHERE data_id = %s AND status = 'pending'",
                (tx_id, height, data_id),
            )

    def discard(self, data_id: str) -> None:
        """Delete a non-anchored upload (its anchor was rejected)."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM objects.uploads WHERE data_id = %s AND status <> 'anchored'",
                (data_id,),
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    projection_timeout_s: float = 15.0

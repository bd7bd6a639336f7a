"""The data access proxy: off-chain objects in Postgres, their hashes anchored on chain.

Routes (added to the gateway's app when it is given a :class:`DataProxy`)
-------------------------------------------------------------------------
``PUT /objects/{data_id}``        store the request body; needs ``data:write``
``GET /objects/{data_id}``        the bytes with their anchor; ``data:read`` and the policy
``GET /objects/{data_id}/proof``  the JSON proof bundle; same rights as reading the object

Theory of operation
-------------------
* **Upload.** The body is streamed, never held whole: chunks of ``chunk_bytes`` (1 MiB) of
  plaintext are sealed with AES-GCM under the **owner's data key** (the uploader's, token
  ``sub``; created in ``iam_data_keys`` on their first upload, :mod:`gateway.object_crypto`)
  and go to ``objects.chunks`` with the SHA-256 of each sealed chunk, inside ONE Postgres
  transaction that first inserts the upload's row in ``objects.uploads`` (so a concurrent
  upload of the same id waits, then gets 409), computes the plaintext's SHA-256 on the way and
  rolls back past ``max_object_bytes`` (413; a declared ``Content-Length`` above it is refused
  before anything is read). ``Content-Type`` is kept; private ``metadata`` (sealed under the
  owner's key as well) comes from the ``metadata`` query parameter or the
  ``X-Pantheon-Metadata`` header (at most 4096 UTF-8 bytes); the access policy from repeated
  ``group=`` / ``user=`` query parameters or the ``X-Pantheon-Policy`` header (JSON
  ``{"groups": [...], "users": [...]}``).
* **Anchor.** After the commit (status ``pending``), ``AnchorData(data_id, sha256, metadata)``
  is signed by the gateway's :class:`AnchorSigner` -- for the local deployment the
  institution's governance key from ``--keystore`` (:class:`gateway.governance.Governance`,
  whose lock and nonce logic it shares with the governance mutations); a SERVICE identity of
  the institution is preferred in production (see :data:`SIGNER_NOTE`). The on-chain metadata
  is only ``{"content_type", "size"}``: chain data is visible to every member, the private
  metadata stays off chain. On an ``OK`` receipt the proxy produces ``ObjectStored`` and one
  ``ObjectAccessChanged`` per grant to the institution's IAM topic through the IAM service's
  producer (:class:`EventPublisher`), waits until :mod:`projections.objects` projected them
  into ``objects.objects`` / ``objects.grants``, marks the upload ``anchored`` and answers
  ``201 {data_id, sha256, size, tx_id, height}``. A rejection deletes the upload; a timeout
  (504) leaves it ``pending``: uploading the same bytes again adopts the anchor if it was
  applied meanwhile (an id already anchored with another hash, or by another institution, is
  409). (D23)
* **Read.** From the projected rows only, each checked before it is acted on: the metadata
  row's MAC (under the owner's data key: a row edited in the database is ``OBJECT_TAMPERED``),
  each grant's MAC (a grant the events do not support is ignored and counted), then
  ``data:read`` plus the policy: the owner, a member of one of the policy's groups, a user
  the policy names, or an ``admin`` (403 ``FORBIDDEN`` otherwise, 404 if there is no such
  object, 409 ``NOT_ANCHORED`` while the anchor is not final or not projected yet). The
  anchored hash of the chain projection (``chain.anchors``) must equal the row's (else 502
  ``ANCHOR_MISMATCH``: the row is missing or names another hash). The chunks' digests must
  hash to the row's chunk root before anything is sent; each chunk is then checked against
  its digest, decrypted (AES-GCM authenticates it again) and hashed: the first chunk before
  the headers go out (a bad one is a clean 502 ``OBJECT_TAMPERED``), later ones while
  streaming (a bad one aborts the stream: the client sees a truncated transfer, never a
  complete wrong body), and the whole plaintext against the anchored hash before the last
  bytes go out. Every refusal of that kind increments
  ``pantheon_gateway_object_integrity_failures_total{what}``. An object whose owner was
  forgotten (data key destroyed) is 410 ``OBJECT_SHREDDED``. Headers carry the anchor
  (``X-Pantheon-SHA256``, ``-Anchor-Tx``, ``-Anchor-Height``, ``-Block-Hash``,
  ``-Certificate``), the proof (``X-Pantheon-Proof``: base64url of the compact proof JSON,
  when under 12 KiB) and ``Link: <.../proof>; rel="proof"``.
* **Proof.** :func:`readers.object_verify.object_proof` over the projected chain tables;
  clients check it offline with :func:`readers.object_verify.verify_object` or ``pantheon
  verify-object``. Anchored objects are never changed by the gateway; ``pantheon audit``
  compares the projected rows with the IAM topic and every object's stored chunks with the
  chunk root of its ``ObjectStored`` event (:mod:`readers.audit_objects`).
* Data ids are the ledger's (1 to 128 printable characters) without ``/``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio.from_thread
import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import queries
from gateway.auth.crypto import CryptoError, DataKey, open_text, seal_text
from gateway.auth.permissions import GROUP_PREFIX, Permission
from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.errors import BadInput, BodyTooLarge, Forbidden, GatewayError, Unavailable, error_body
from gateway.governance import Outcome
from gateway.iam import store as iam_store
from gateway.iam.commands import Event
from gateway.iam.errors import IamError
from gateway.iam.kek import KekStore
from gateway.metrics import GatewayMetrics
from gateway.object_crypto import (
    chunk_aad,
    chunk_digest,
    chunk_root,
    grant_mac,
    mac_ok,
    new_upload_id,
    object_mac,
    open_chunk,
    seal_chunk,
)
from ledger.context import MAX_METADATA_BYTES, fits_metadata, is_id
from ledger.proofs import ObjectProof
from ledger.results import ResultCode
from projections import read
from projections.migrate import apply_migrations
from projections.objects import GRANT_COLUMNS, OBJECT_COLUMNS, projection_name
from projections.read import Conn
from readers.object_verify import object_proof

log = logging.getLogger("pantheon.gateway")

MIGRATIONS = Path(__file__).resolve().parent.parent / "projections" / "migrations" / "objects"
NAMESPACE = "objects"
DEFAULT_MAX_OBJECT_BYTES = 16 * 1024 * 1024
DEFAULT_CHUNK_BYTES = 1024 * 1024
MAX_POLICY_ENTRIES = 64
MAX_CONTENT_TYPE_CHARS = 255
MAX_PROOF_HEADER_BYTES = 12 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
SIGNER_NOTE = (
    "AnchorData is signed with the institution's governance key (--keystore) in the local "
    "deployment; production should register a SERVICE identity for the proxy and sign with it"
)
JSON_TYPE = "application/json"
ClaimsOf = Callable[[Request], Awaitable[Claims | None]]


# -- errors ----------------------------------------------------------------------------------------
class ObjectNotFound(GatewayError):
    code = "NOT_FOUND"
    status = 404


class ObjectExists(GatewayError):
    """The data id is taken: an anchored object, a concurrent upload, or an anchor on chain."""

    code = "ALREADY_EXISTS"
    status = 409


class NotAnchored(GatewayError):
    """The object is stored but its anchor is not final yet (or its submission timed out)."""

    code = "NOT_ANCHORED"
    status = 409


class AnchorRejected(GatewayError):
    """The chain rejected the AnchorData (``code`` is the result code)."""

    status = 502

    def __init__(self, result: ResultCode, message: str) -> None:
        super().__init__(message, result=result.name)
        self.code = result.name


class SignerMissing(GatewayError):
    code = "ANCHOR_KEY_MISSING"
    status = 503


class ObjectTampered(GatewayError):
    """What the database holds for the object is not what the gateway stored (``what``:
    ``metadata``, ``chunks``, ``chunk``, ``content``)."""

    code = "OBJECT_TAMPERED"
    status = 502


class AnchorMismatch(GatewayError):
    """The chain projection's anchor of the object is missing or names another hash."""

    code = "ANCHOR_MISMATCH"
    status = 502


class ObjectShredded(GatewayError):
    """The owner's data key was destroyed (the owner was forgotten): the object is gone."""

    code = "OBJECT_SHREDDED"
    status = 410


class NotRecorded(GatewayError):
    """The anchor is final but the object's events were not projected in time."""

    code = "NOT_RECORDED"
    status = 504


class LegacyObject(GatewayError):
    """An object stored before D23: plaintext chunks and no ObjectStored event."""

    code = "LEGACY_OBJECT"
    status = 409


class StreamAborted(RuntimeError):
    """Raised inside a response body after its headers went out: the server then closes the
    connection without completing the body (the client sees a truncated transfer)."""


# -- policy ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Policy:
    """Who besides the owner may read an object: members of ``groups``, the ``users`` named."""

    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def allows(self, claims: Claims, owner: str) -> bool:
        """Owner, a member of an allowed group, an explicitly granted user, or an admin."""
        return (
            claims.sub == owner
            or claims.sub in self.users
            or any(g in self.groups for g in claims.groups)
            or claims.has(Permission.ADMIN.value)
        )

    def subjects(self) -> list[str]:
        """Grant subjects: user ids and ``group:<name>``."""
        return [*self.users, *(GROUP_PREFIX + g for g in self.groups)]

    @classmethod
    def of_subjects(cls, subjects: Sequence[str]) -> Policy:
        groups = sorted(s[len(GROUP_PREFIX) :] for s in subjects if s.startswith(GROUP_PREFIX))
        users = sorted(s for s in subjects if not s.startswith(GROUP_PREFIX))
        return cls(groups=tuple(groups), users=tuple(users))


def _names(values: Any, what: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise BadInput(f"the policy's {what} must be a list of strings", argument=what)
    names = tuple(sorted({v.strip() for v in values if v.strip()}))
    if len(names) > MAX_POLICY_ENTRIES or not all(is_id(n) for n in names):
        raise BadInput(
            f"the policy's {what}: at most {MAX_POLICY_ENTRIES} names of 1 to 128 printable "
            "characters",
            argument=what,
        )
    return names


def parse_policy(request: Request) -> Policy:
    """The policy of a PUT: ``X-Pantheon-Policy`` JSON and/or ``group=`` / ``user=`` params."""
    groups = list(request.query_params.getlist("group"))
    users = list(request.query_params.getlist("user"))
    header = request.headers.get("x-pantheon-policy")
    if header:
        try:
            doc = json.loads(header)
        except json.JSONDecodeError:
            raise BadInput("X-Pantheon-Policy must be JSON", argument="policy") from None
        if not isinstance(doc, dict) or set(doc) - {"groups", "users"}:
            raise BadInput(
                'X-Pantheon-Policy must be {"groups": [...], "users": [...]}', argument="policy"
            )
        groups += _names(doc.get("groups", []), "groups")
        users += _names(doc.get("users", []), "users")
    return Policy(groups=_names(groups, "groups"), users=_names(users, "users"))


# -- data keys and events --------------------------------------------------------------------------
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
            dk = iam_store.get_data_key(conn, self._keys, self.institution, owner)
            if dk is not None or not create:
                return dk
            row = conn.execute(
                "SELECT forgotten FROM iam_users WHERE user_id = %s", (owner,)
            ).fetchone()
            if row is not None and row[0]:
                return None
            try:
                return iam_store.create_data_key(conn, self._keys, self.institution, owner)
            except iam_store.KeyForgotten:  # forgotten, UserForgotten not projected yet
                return None
            except psycopg.errors.UniqueViolation:  # a concurrent first upload made it
                return iam_store.get_data_key(conn, self._keys, self.institution, owner)

    def key_holder(self, key_id: str) -> str | None:
        """The principal whose data key has id ``key_id`` (None: no such key)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT user_id FROM iam_data_keys WHERE key_id = %s", (key_id,)
            ).fetchone()
        return None if row is None else str(row[0])


class EventPublisher(Protocol):
    """Produces events to the institution's IAM topic and waits until ``projection`` applied
    them (:meth:`gateway.iam.service.IamService.publish`)."""

    def publish(self, events: Sequence[Event], *, projection: str) -> None: ...


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
            row = conn.execute(_ROW + "WHERE data_id = %s AND status <> 'uploading'",
                               (data_id,)).fetchone()  # fmt: skip
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
                    row = conn.execute(_ROW + "WHERE data_id = %s FOR UPDATE",
                                       (data_id,)).fetchone()  # fmt: skip
                    if row is not None:
                        existing = _row(row)
                        if existing.status == "anchored" or not may_replace(existing):
                            raise ObjectExists(f"object {data_id!r} exists", dataId=data_id)
                        conn.execute("DELETE FROM objects.uploads WHERE data_id = %s", (data_id,))
                    conn.execute(
                        "INSERT INTO objects.uploads (data_id, content_type, metadata, owner, "
                        "groups, grants, status, data_key_id, upload_id) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 'uploading', %s, %s)",
                        (data_id, content_type, metadata, owner, list(policy.groups),
                         list(policy.users), key.key_id, upload_id),
                    )  # fmt: skip

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
            data_id=data_id, sha256=digest.digest(), size=size, content_type=content_type,
            metadata=metadata, owner=owner, policy=policy, status="pending", tx_id=None,
            height=None, data_key_id=key.key_id, upload_id=upload_id, chunk_count=seq,
            chunk_root=chunk_root(digests),
        )  # fmt: skip

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


# -- signing ---------------------------------------------------------------------------------------
class AnchorSigner(Protocol):
    """Signs and submits one transaction and waits for its receipt
    (:class:`gateway.governance.Governance` is one)."""

    def submit(self, conn: Conn, operation: str, args: Mapping[str, Any]) -> Outcome: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    projection_timeout_s: float = 15.0


def anchor_metadata(content_type: str, size: int) -> str:
    """The public metadata of an object's AnchorData."""
    return json.dumps({"content_type": content_type, "size": size}, separators=(",", ":"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Readable:
    """An object the caller may read: its verified row, key, clear metadata and proof."""

    row: ObjectRow
    key: DataKey
    metadata: str
    proof: ObjectProof


# -- the proxy -------------------------------------------------------------------------------------
@dataclass(slots=True)
class DataProxy:
    """One institution's data access proxy (``create_app(..., objects=proxy)``)."""

    institution: str
    store: ObjectStore
    signer: AnchorSigner | None
    keys: ObjectKeys | None = None
    events: EventPublisher | None = None
    config: ProxyConfig = field(default_factory=ProxyConfig)
    metrics: GatewayMetrics | None = None

    @classmethod
    def create(
        cls,
        institution: str,
        pool: ConnectionPool[Any],
        signer: AnchorSigner | None,
        config: ProxyConfig | None = None,
        *,
        kek: KekStore | None = None,
        events: EventPublisher | None = None,
        migrate: bool = True,
    ) -> DataProxy:
        cfg = config or ProxyConfig()
        store = ObjectStore(pool, chunk_bytes=cfg.chunk_bytes)
        if migrate:
            store.migrate()
        keys = None if kek is None else ObjectKeys(pool, kek)
        return cls(
            institution=institution,
            store=store,
            signer=signer,
            keys=keys,
            events=events,
            config=cfg,
        )

    def routes(self, claims_of: ClaimsOf, metrics: GatewayMetrics | None = None) -> list[Route]:
        """The HTTP routes; ``claims_of`` authenticates a request (None without a token)."""
        if metrics is not None:
            self.metrics = metrics

        Handler = Callable[[Request, Claims | None], Awaitable[Response]]

        def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    return await handler(request, await claims_of(request))
                except GatewayError as exc:
                    return _json(error_body([exc]), exc.status)

            return endpoint

        put, get, proof = guarded(self._put), guarded(self._get), guarded(self._proof)

        return [
            Route("/objects/{data_id}/proof", proof, methods=["GET"]),
            Route("/objects/{data_id}", put, methods=["PUT"]),
            Route("/objects/{data_id}", get, methods=["GET"]),
        ]

    def _refused(self, what: str, data_id: str, message: str) -> None:
        """Count and log an integrity failure (``what``: metadata, grant, anchor, chunks,
        chunk, content)."""
        if self.metrics is not None:
            self.metrics.object_integrity.labels(self.institution, what).inc()
        log.error(
            "stored object refused", extra={"data_id": data_id, "what": what, "error": message}
        )

    # -- PUT ---------------------------------------------------------------------------------
    async def _put(self, request: Request, claims: Claims | None) -> Response:
        require(claims, Permission.DATA_WRITE.value)
        assert claims is not None
        data_id = _data_id(request)
        if self.signer is None:
            raise SignerMissing(
                "this gateway has no key to anchor objects (start it with --keystore)"
            )
        if self.keys is None or self.events is None:
            raise Unavailable("this gateway has no IAM service to seal and record objects")
        limit = self.config.max_object_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"the object exceeds {limit} bytes", limit=limit)
        content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
        if len(content_type) > MAX_CONTENT_TYPE_CHARS or not content_type.isprintable():
            raise BadInput("Content-Type is too long or not printable", argument="content-type")
        metadata = _metadata(request)
        policy = parse_policy(request)
        anchored = await run_in_threadpool(self._chain_anchor, data_id)
        if anchored is not None and not await run_in_threadpool(self._has_pending, data_id):
            raise ObjectExists(f"data id {data_id!r} is already anchored on chain", dataId=data_id)
        keys = self.keys
        key = await run_in_threadpool(lambda: keys.owner_key(claims.sub, create=True))
        if key is None:
            raise ObjectShredded(f"{claims.sub} was forgotten: no data key to seal objects")
        sealed_metadata = seal_text(
            key, self.institution, claims.sub, metadata_field(data_id), metadata
        )

        stream = request.stream().__aiter__()

        async def next_piece() -> bytes | None:
            try:
                return await stream.__anext__()
            except StopAsyncIteration:
                return None

        def pull() -> bytes | None:
            return anyio.from_thread.run(next_piece)

        def write() -> StoredObject:
            return self.store.write(
                data_id=data_id, content_type=content_type, metadata=sealed_metadata,
                owner=claims.sub, policy=policy, pull=pull, limit=limit,
                may_replace=lambda old: old.status == "pending", key=key,
                institution=self.institution,
            )  # fmt: skip

        stored = await run_in_threadpool(write)
        tx_id, height = await run_in_threadpool(self._anchor, stored)
        await run_in_threadpool(self._record, stored, key, tx_id, height, claims.sub)
        body = {
            "data_id": data_id,
            "sha256": stored.sha256.hex(),
            "size": stored.size,
            "content_type": content_type,
            "tx_id": tx_id.hex(),
            "height": height,
        }
        return _json(body, 201)

    def _record(
        self, stored: StoredObject, key: DataKey, tx_id: bytes, height: int, actor: str
    ) -> None:
        """Produce the object's events, wait until they are projected, mark it anchored."""
        assert self.events is not None and stored.upload_id is not None
        now_ms = int(time.time() * 1000)
        common = {
            "institution_id": self.institution,
            "at_ms": now_ms,
            "actor": actor,
            "object_id": stored.data_id,
            "upload_id": stored.upload_id,
        }
        mac = object_mac(
            key,
            self.institution,
            data_id=stored.data_id,
            owner=stored.owner,
            sha256=stored.sha256,
            size=stored.size,
            content_type=stored.content_type,
            metadata=stored.metadata,
            upload_id=stored.upload_id,
            chunk_count=stored.chunk_count,
            chunk_root=stored.chunk_root,
        )
        events = [
            Event(
                "ObjectStored",
                stored.data_id,
                {
                    **common,
                    "event_id": uuid.uuid4().hex,
                    "owner": stored.owner,
                    "sha256": stored.sha256,
                    "size": stored.size,
                    "content_type": stored.content_type,
                    "metadata": stored.metadata,
                    "data_key_id": key.key_id,
                    "chunk_count": stored.chunk_count,
                    "chunk_root": stored.chunk_root,
                    "anchor_tx": tx_id,
                    "anchor_height": height,
                    "mac": mac,
                },
            )
        ]
        for subject in stored.policy.subjects():
            events.append(
                Event(
                    "ObjectAccessChanged",
                    stored.data_id,
                    {
                        **common,
                        "event_id": uuid.uuid4().hex,
                        "subject": subject,
                        "granted": True,
                        "mac": grant_mac(
                            key,
                            self.institution,
                            data_id=stored.data_id,
                            upload_id=stored.upload_id,
                            subject=subject,
                            granted=True,
                        ),
                    },
                )
            )
        try:
            self.events.publish(events, projection=projection_name(self.institution))
        except IamError as exc:  # the upload stays pending: the same PUT again completes it
            raise NotRecorded(
                f"{stored.data_id!r} is anchored but its record was not projected in time "
                f"({exc}); upload the same bytes again to complete it",
                dataId=stored.data_id,
            ) from None
        self.store.mark_anchored(stored.data_id, tx_id, height)

    def _chain_anchor(self, data_id: str) -> read.Anchor | None:
        with self.store.pool.connection() as conn:
            return read.anchor(conn, data_id)

    def _has_pending(self, data_id: str) -> bool:
        found = self.store.get(data_id)
        return found is not None and found.status == "pending"

    def _anchor(self, stored: StoredObject) -> tuple[bytes, int]:
        """Submit the AnchorData of ``stored`` (or adopt an equal anchor); (tx id, height)."""
        assert self.signer is not None
        args = {
            "data_id": stored.data_id,
            "sha256": stored.sha256,
            "metadata": anchor_metadata(stored.content_type, stored.size),
        }
        with self.store.pool.connection() as conn:
            existing = read.anchor(conn, stored.data_id)
            if existing is None:
                outcome = self.signer.submit(conn, "AnchorData", args)
                if outcome.code is ResultCode.OK:
                    log.info("object anchored", extra={"data_id": stored.data_id,
                                                       "height": outcome.height})  # fmt: skip
                    return outcome.tx_id, outcome.height
                if outcome.code is not ResultCode.ALREADY_EXISTS:
                    self.store.discard(stored.data_id)
                    raise AnchorRejected(
                        outcome.code, f"the chain rejected the anchor: {outcome.code.name}"
                    )
                self._wait_projected(conn, outcome.height)
                existing = read.anchor(conn, stored.data_id)
            if (
                existing is None
                or existing.sha256 != stored.sha256
                or existing.institution_id != self.institution
            ):
                self.store.discard(stored.data_id)
                raise ObjectExists(
                    f"data id {stored.data_id!r} is anchored on chain with another hash or by "
                    "another institution",
                    dataId=stored.data_id,
                )
            proof = object_proof(conn, stored.data_id)
            if proof is None:
                raise NotAnchored(f"the anchor of {stored.data_id!r} is not projected yet")
            return proof.tx_id, proof.height

    def _wait_projected(self, conn: Conn, height: int) -> None:
        deadline = time.monotonic() + self.config.projection_timeout_s
        while (current := queries.chain_height(conn)) is None or current < height:
            if time.monotonic() > deadline:
                raise Unavailable(f"the chain projection has not reached height {height}")
            time.sleep(0.05)

    # -- GET ---------------------------------------------------------------------------------
    def _not_projected(self, data_id: str, claims: Claims) -> GatewayError:
        """The refusal for an id without a projected row: 404, 403 or 409 (an upload whose
        anchor or events are not final / projected yet)."""
        upload = self.store.get(data_id)
        if upload is None:
            return ObjectNotFound(f"no object {data_id!r}", dataId=data_id)
        if not upload.policy.allows(claims, upload.owner):
            return Forbidden(
                f"the access policy of {data_id!r} does not include you", reason="policy"
            )
        if upload.status == "anchored" and upload.upload_id is None:
            return LegacyObject(
                f"{data_id!r} was stored before objects were sealed and recorded as events "
                "(D23): upload it again under a new id",
                dataId=data_id,
            )
        return NotAnchored(f"the anchor of {data_id!r} is not final yet", dataId=data_id)

    def _verified_policy(self, row: ObjectRow, key: DataKey) -> Policy:
        """The row's grants that the owner's key authenticates (others are counted, ignored)."""
        subjects: list[str] = []
        for subject, upload_id, mac in row.grants:
            expected = grant_mac(
                key,
                self.institution,
                data_id=row.data_id,
                upload_id=row.upload_id,
                subject=subject,
                granted=True,
            )
            if upload_id == row.upload_id and mac_ok(expected, mac):
                subjects.append(subject)
            else:
                self._refused("grant", row.data_id, f"grant to {subject!r} does not verify")
        return Policy.of_subjects(subjects)

    def _readable(self, data_id: str, claims: Claims | None) -> Readable:
        require(claims, Permission.DATA_READ.value)
        assert claims is not None
        row = self.store.projected(data_id)
        if row is None:
            raise self._not_projected(data_id, claims)
        key = None if self.keys is None else self.keys.owner_key(row.owner)
        if key is None and self.keys is not None and self.keys.key_holder(row.data_key_id):
            # the object's key exists but is another principal's: the owner column was edited
            self._refused("metadata", data_id, "the owner does not hold the object's key")
            raise ObjectTampered(
                f"objects.objects row of {data_id!r} was changed outside the gateway",
                dataId=data_id,
                table="objects.objects",
            )
        if key is None:
            unverified = Policy.of_subjects([g[0] for g in row.grants])
            if not unverified.allows(claims, row.owner):
                raise Forbidden(
                    f"the access policy of {data_id!r} does not include you", reason="policy"
                )
            raise ObjectShredded(
                f"the owner of {data_id!r} was forgotten: the object is shredded", dataId=data_id
            )
        expected = object_mac(
            key,
            self.institution,
            data_id=row.data_id,
            owner=row.owner,
            sha256=row.sha256,
            size=row.size,
            content_type=row.content_type,
            metadata=row.metadata,
            upload_id=row.upload_id,
            chunk_count=row.chunk_count,
            chunk_root=row.chunk_root,
        )
        if key.key_id != row.data_key_id or not mac_ok(expected, row.mac):
            self._refused("metadata", data_id, "the metadata row does not verify")
            raise ObjectTampered(
                f"objects.objects row of {data_id!r} was changed outside the gateway",
                dataId=data_id,
                table="objects.objects",
            )
        if not self._verified_policy(row, key).allows(claims, row.owner):
            raise Forbidden(
                f"the access policy of {data_id!r} does not include you", reason="policy"
            )
        try:
            metadata = open_text(
                key, self.institution, row.owner, metadata_field(data_id), row.metadata
            )
        except CryptoError:
            self._refused("metadata", data_id, "the metadata does not open")
            raise ObjectTampered(
                f"the metadata of {data_id!r} does not open",
                dataId=data_id,
                table="objects.objects",
            ) from None
        return Readable(row=row, key=key, metadata=metadata, proof=self._proof_of(row))

    def _proof_of(self, row: ObjectRow) -> ObjectProof:
        """The proof of the row's anchor, after checking the chain projection's anchor row
        against the object's hash."""
        with self.store.pool.connection() as conn:
            anchor = read.anchor(conn, row.data_id)
            height = queries.chain_height(conn)
            projected = height is not None and height >= row.anchor_height
            if anchor is None and not projected:
                raise NotAnchored(f"the anchor of {row.data_id!r} is not projected yet")
            if anchor is None or anchor.sha256 != row.sha256:
                shown = "none" if anchor is None else anchor.sha256.hex()
                self._refused("anchor", row.data_id, f"chain.anchors holds {shown}")
                raise AnchorMismatch(
                    f"chain.anchors of {row.data_id!r} holds {shown}, the stored object hashes "
                    f"to {row.sha256.hex()} (anchored at height {row.anchor_height})",
                    dataId=row.data_id,
                    table="chain.anchors",
                    expected=row.sha256.hex(),
                    actual=shown,
                )
            proof = object_proof(conn, row.data_id, size=row.size, content_type=row.content_type)
        if proof is None:
            if not projected:
                raise NotAnchored(f"the anchor of {row.data_id!r} is not projected yet")
            self._refused("anchor", row.data_id, "no proof in the projected chain tables")
            raise AnchorMismatch(
                f"the chain projection has no proof of the anchor of {row.data_id!r} at height "
                f"{row.anchor_height}",
                dataId=row.data_id,
                table="chain.transactions",
            )
        return proof

    def read_with_proof(self, data_id: str, claims: Claims | None) -> Readable:
        """Authorize, verify and return the object's row, key and proof (for the routes)."""
        return self._readable(data_id, claims)

    def _digests(self, row: ObjectRow) -> list[bytes]:
        """The stored chunks' digests, checked against the row's (MAC-verified) chunk root."""
        found = self.store.chunk_digests(row.data_id)
        digests = [d for _, d in found if d is not None]
        if (
            [s for s, _ in found] != list(range(row.chunk_count))
            or len(digests) != row.chunk_count
            or chunk_root(digests) != row.chunk_root
        ):
            self._refused("chunks", row.data_id, "the chunks do not match the chunk root")
            raise ObjectTampered(
                f"the stored chunks of {row.data_id!r} are not the ones stored by the gateway",
                dataId=row.data_id,
                table="objects.chunks",
            )
        return digests

    def _open(self, readable: Readable, seq: int, digest: bytes) -> bytes:
        """Chunk ``seq`` in clear, checked against its digest and by AES-GCM."""
        row = readable.row
        sealed = self.store.chunk(row.data_id, seq)
        if sealed is None or chunk_digest(sealed) != digest:
            self._refused("chunk", row.data_id, f"chunk {seq} does not match its digest")
            raise ObjectTampered(
                f"chunk {seq} of {row.data_id!r} was changed",
                dataId=row.data_id,
                table="objects.chunks",
                seq=seq,
            )
        aad = chunk_aad(
            self.institution, row.owner, readable.key.key_id, row.data_id, row.upload_id, seq
        )
        try:
            return open_chunk(readable.key, aad, sealed)
        except CryptoError:
            self._refused("chunk", row.data_id, f"chunk {seq} does not open")
            raise ObjectTampered(
                f"chunk {seq} of {row.data_id!r} does not open",
                dataId=row.data_id,
                table="objects.chunks",
                seq=seq,
            ) from None

    def plaintext(self, readable: Readable, digests: Sequence[bytes]) -> Iterator[bytes]:
        """The object's plaintext chunk by chunk, each verified before it is yielded; the last
        one only once the whole content hashes to the anchored hash (:class:`ObjectTampered`
        otherwise)."""
        row = readable.row
        digest, size = hashlib.sha256(), 0
        previous: bytes | None = None
        for seq, expected in enumerate(digests):
            data = self._open(readable, seq, expected)
            digest.update(data)
            size += len(data)
            if previous is not None:
                yield previous
            previous = data
        if digest.digest() != row.sha256 or size != row.size:
            self._refused("content", row.data_id, "the content does not hash to the anchor")
            raise ObjectTampered(
                f"the content of {row.data_id!r} does not hash to its anchor",
                dataId=row.data_id,
                table="objects.chunks",
            )
        if previous is not None:
            yield previous

    async def _get(self, request: Request, claims: Claims | None) -> Response:
        data_id = _data_id(request)
        readable = await run_in_threadpool(self.read_with_proof, data_id, claims)
        row, proof = readable.row, readable.proof
        digests = await run_in_threadpool(self._digests, row)
        chunks = self.plaintext(readable, digests)
        # The first verified piece before the headers: a bad first chunk (or a one-chunk
        # object) is a clean typed error, not a cut stream.
        first = await run_in_threadpool(next, chunks, b"")

        async def body() -> AsyncIterator[bytes]:
            if first:
                yield first
            while True:
                try:
                    piece = await run_in_threadpool(next, chunks, None)
                except ObjectTampered as exc:
                    raise StreamAborted(exc.message) from None
                if piece is None:
                    return
                yield piece

        doc = proof.to_json()
        headers = {
            "Content-Length": str(row.size),
            "ETag": f'"{row.sha256.hex()}"',
            "Cache-Control": "private, no-store",
            "X-Pantheon-Data-Id": urllib.parse.quote(data_id, safe=""),
            "X-Pantheon-SHA256": row.sha256.hex(),
            "X-Pantheon-Anchor-Tx": proof.tx_id.hex(),
            "X-Pantheon-Anchor-Height": str(proof.height),
            "X-Pantheon-Block-Hash": proof.block_hash.hex(),
            "X-Pantheon-Certificate": proof.certificate.hex(),
            "X-Pantheon-Metadata": urllib.parse.quote(readable.metadata, safe=""),
            "Link": f'</objects/{urllib.parse.quote(data_id, safe="")}/proof>; rel="proof"',
        }
        compact = json.dumps(doc, separators=(",", ":")).encode()
        encoded = base64.urlsafe_b64encode(compact).decode().rstrip("=")
        if len(encoded) <= MAX_PROOF_HEADER_BYTES:
            headers["X-Pantheon-Proof"] = encoded
        return StreamingResponse(body(), media_type=row.content_type, headers=headers)

    async def _proof(self, request: Request, claims: Claims | None) -> Response:
        data_id = _data_id(request)
        readable = await run_in_threadpool(self.read_with_proof, data_id, claims)
        return _json(readable.proof.to_json())


# -- helpers ---------------------------------------------------------------------------------------
def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, media_type=JSON_TYPE)


def _data_id(request: Request) -> str:
    data_id = str(request.path_params["data_id"])
    if not is_id(data_id) or "/" in data_id:
        raise BadInput("the data id must be 1 to 128 printable characters", argument="data_id")
    return data_id


def _metadata(request: Request) -> str:
    value = request.query_params.get("metadata")
    if value is None:
        header = request.headers.get("x-pantheon-metadata", "")
        try:  # HTTP headers arrive as latin-1; clients send UTF-8 bytes
            value = urllib.parse.unquote(header.encode("latin-1").decode("utf-8"))
        except UnicodeError:
            raise BadInput("X-Pantheon-Metadata must be UTF-8", argument="metadata") from None
    if not fits_metadata(value):
        raise BadInput(f"metadata is limited to {MAX_METADATA_BYTES} bytes", argument="metadata")
    return value


# -- server wiring ---------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The proxy's flags of ``pantheon gateway``."""
    parser.add_argument(
        "--max-object-bytes",
        type=int,
        default=DEFAULT_MAX_OBJECT_BYTES,
        help="largest object the data access proxy stores (default 16 MiB; 413 beyond)",
    )


def from_args(
    args: argparse.Namespace,
    pool: ConnectionPool[Any],
    signer: AnchorSigner | None,
    *,
    kek: KekStore | None = None,
    events: EventPublisher | None = None,
) -> DataProxy:
    """The proxy of ``pantheon gateway`` (creates its tables if needed); ``kek`` (the IAM
    service's key store) and ``events`` (the IAM service) seal and record objects."""
    config = ProxyConfig(max_object_bytes=args.max_object_bytes)
    return DataProxy.create(args.institution, pool, signer, config, kek=kek, events=events)

"""The data access proxy: off-chain objects in Postgres, their hashes anchored on chain.

Routes (added to the gateway's app when it is given a :class:`DataProxy`)
-------------------------------------------------------------------------
``PUT /objects/{data_id}``        store the request body; needs ``data:write``
``GET /objects/{data_id}``        the bytes with their anchor; ``data:read`` and the policy
``GET /objects/{data_id}/proof``  the JSON proof bundle; same rights as reading the object

Theory of operation
-------------------
* **Upload.** The body is streamed, never held whole: chunks of ``chunk_bytes`` (1 MiB) go to
  ``objects.chunks`` inside ONE Postgres transaction that first inserts the object's row (so a
  concurrent upload of the same id waits, then gets 409), computes the SHA-256 on the way and
  rolls back past ``max_object_bytes`` (413; a declared ``Content-Length`` above it is refused
  before anything is read). ``Content-Type`` is kept; private ``metadata`` comes from the
  ``metadata`` query parameter or the ``X-Pantheon-Metadata`` header (at most 4096 UTF-8
  bytes); the access policy from repeated ``group=`` / ``user=`` query parameters or the
  ``X-Pantheon-Policy`` header (JSON ``{"groups": [...], "users": [...]}``). The uploader
  (token ``sub``) is the owner.
* **Anchor.** After the commit (status ``pending``), ``AnchorData(data_id, sha256, metadata)``
  is signed by the gateway's :class:`AnchorSigner` -- for the local deployment the
  institution's governance key from ``--keystore`` (:class:`gateway.governance.Governance`,
  whose lock and nonce logic it shares with the governance mutations); a SERVICE identity of
  the institution is preferred in production (see :data:`SIGNER_NOTE`). The on-chain metadata
  is only ``{"content_type", "size"}``: chain data is visible to every member, the private
  metadata stays off chain. On an ``OK`` receipt the row becomes ``anchored`` (tx id,
  height) and the answer is ``201 {data_id, sha256, size, tx_id, height}``. A rejection
  deletes the row (the chain's result code is the error code); a timeout (504) leaves it
  ``pending``: uploading the same bytes again adopts the anchor if it was applied meanwhile
  (an id already anchored with another hash, or by another institution, is 409).
* **Read.** ``data:read`` plus the policy: the owner, a member of one of the policy's groups,
  a user the policy names, or an ``admin`` (403 ``FORBIDDEN`` otherwise, 404 if there is no
  such object, 409 ``NOT_ANCHORED`` while the anchor is not final). The body streams chunk by
  chunk; headers carry the anchor (``X-Pantheon-SHA256``, ``-Anchor-Tx``, ``-Anchor-Height``,
  ``-Block-Hash``, ``-Certificate``), the proof (``X-Pantheon-Proof``: base64url of the
  compact proof JSON, when under 12 KiB) and ``Link: <.../proof>; rel="proof"``.
* **Proof.** :func:`streams.object_verify.object_proof` over the projected chain tables;
  clients check it offline with :func:`streams.object_verify.verify_object` or ``pantheon
  verify-object``. Anchored objects are never changed by the gateway; ``pantheon audit``
  re-hashes every stored object against its anchor.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
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
from gateway.auth.permissions import Permission
from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.errors import BadInput, BodyTooLarge, Forbidden, GatewayError, Unavailable, error_body
from gateway.governance import Outcome
from ledger.context import MAX_METADATA_BYTES, fits_metadata, is_id
from ledger.proofs import ObjectProof
from ledger.results import ResultCode
from projections import read
from projections.migrate import apply_migrations
from projections.read import Conn
from streams.object_verify import object_proof

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


# -- the store -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StoredObject:
    """An object's row (no content)."""

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


_ROW = (
    "SELECT data_id, sha256, size, content_type, metadata, owner, groups, grants, status, "
    "tx_id, height FROM objects.objects "
)


def _row(r: Sequence[Any]) -> StoredObject:
    return StoredObject(
        data_id=r[0],
        sha256=bytes(r[1]),
        size=int(r[2]),
        content_type=r[3],
        metadata=r[4],
        owner=r[5],
        policy=Policy(groups=tuple(r[6]), users=tuple(r[7])),
        status=r[8],
        tx_id=None if r[9] is None else bytes(r[9]),
        height=None if r[10] is None else int(r[10]),
    )


class ObjectStore:
    """``objects.objects`` and ``objects.chunks`` of one institution's database."""

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
        with self.pool.connection() as conn:
            row = conn.execute(_ROW + "WHERE data_id = %s AND status <> 'uploading'",
                               (data_id,)).fetchone()  # fmt: skip
        return None if row is None else _row(row)

    def chunk_seqs(self, data_id: str) -> list[int]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT seq FROM objects.chunks WHERE data_id = %s ORDER BY seq", (data_id,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def chunk(self, data_id: str, seq: int) -> bytes:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT chunk FROM objects.chunks WHERE data_id = %s AND seq = %s", (data_id, seq)
            ).fetchone()
        if row is None:
            raise Unavailable(f"chunk {seq} of {data_id!r} disappeared")
        return bytes(row[0])

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
    ) -> StoredObject:
        """Stream the content from ``pull`` (None at the end) into a new ``pending`` object.

        An existing non-anchored object of that id is replaced if ``may_replace`` says so;
        otherwise, or if it is anchored, :class:`ObjectExists`."""
        digest, size, seq = hashlib.sha256(), 0, 0
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
                        conn.execute("DELETE FROM objects.objects WHERE data_id = %s", (data_id,))
                    conn.execute(
                        "INSERT INTO objects.objects (data_id, content_type, metadata, owner, "
                        "groups, grants, status) VALUES (%s, %s, %s, %s, %s, %s, 'uploading')",
                        (data_id, content_type, metadata, owner, list(policy.groups),
                         list(policy.users)),
                    )  # fmt: skip

                    def flush(data: bytes) -> None:
                        nonlocal seq
                        conn.execute(
                            "INSERT INTO objects.chunks (data_id, seq, chunk) VALUES (%s, %s, %s)",
                            (data_id, seq, data),
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
                        "UPDATE objects.objects SET sha256 = %s, size = %s, status = 'pending' "
                        "WHERE data_id = %s",
                        (digest.digest(), size, data_id),
                    )
            except psycopg.errors.UniqueViolation:
                raise ObjectExists(
                    f"object {data_id!r} is being uploaded by another request", dataId=data_id
                ) from None
        return StoredObject(
            data_id=data_id, sha256=digest.digest(), size=size, content_type=content_type,
            metadata=metadata, owner=owner, policy=policy, status="pending", tx_id=None,
            height=None,
        )  # fmt: skip

    def mark_anchored(self, data_id: str, tx_id: bytes, height: int) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE objects.objects SET status = 'anchored', tx_id = %s, height = %s, "
                "anchored_at = now() WHERE data_id = %s AND status = 'pending'",
                (tx_id, height, data_id),
            )

    def discard(self, data_id: str) -> None:
        """Delete a non-anchored object (its anchor was rejected)."""
        with self.pool.connection() as conn:
            conn.execute(
                "DELETE FROM objects.objects WHERE data_id = %s AND status <> 'anchored'",
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


# -- the proxy -------------------------------------------------------------------------------------
@dataclass(slots=True)
class DataProxy:
    """One institution's data access proxy (``create_app(..., objects=proxy)``)."""

    institution: str
    store: ObjectStore
    signer: AnchorSigner | None
    config: ProxyConfig = field(default_factory=ProxyConfig)

    @classmethod
    def create(
        cls,
        institution: str,
        pool: ConnectionPool[Any],
        signer: AnchorSigner | None,
        config: ProxyConfig | None = None,
        *,
        migrate: bool = True,
    ) -> DataProxy:
        cfg = config or ProxyConfig()
        store = ObjectStore(pool, chunk_bytes=cfg.chunk_bytes)
        if migrate:
            store.migrate()
        return cls(institution=institution, store=store, signer=signer, config=cfg)

    def routes(self, claims_of: ClaimsOf) -> list[Route]:
        """The HTTP routes; ``claims_of`` authenticates a request (None without a token)."""

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

    # -- PUT ---------------------------------------------------------------------------------
    async def _put(self, request: Request, claims: Claims | None) -> Response:
        require(claims, Permission.DATA_WRITE.value)
        assert claims is not None
        data_id = _data_id(request)
        if self.signer is None:
            raise SignerMissing(
                "this gateway has no key to anchor objects (start it with --keystore)"
            )
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
                data_id=data_id, content_type=content_type, metadata=metadata,
                owner=claims.sub, policy=policy, pull=pull, limit=limit,
                may_replace=lambda old: old.status == "pending",
            )  # fmt: skip

        stored = await run_in_threadpool(write)
        tx_id, height = await run_in_threadpool(self._anchor, stored)
        body = {
            "data_id": data_id,
            "sha256": stored.sha256.hex(),
            "size": stored.size,
            "content_type": content_type,
            "tx_id": tx_id.hex(),
            "height": height,
        }
        return _json(body, 201)

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
                    self.store.mark_anchored(stored.data_id, outcome.tx_id, outcome.height)
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
            self.store.mark_anchored(stored.data_id, proof.tx_id, proof.height)
            return proof.tx_id, proof.height

    def _wait_projected(self, conn: Conn, height: int) -> None:
        deadline = time.monotonic() + self.config.projection_timeout_s
        while (current := queries.chain_height(conn)) is None or current < height:
            if time.monotonic() > deadline:
                raise Unavailable(f"the chain projection has not reached height {height}")
            time.sleep(0.05)

    # -- GET ---------------------------------------------------------------------------------
    def _readable(self, data_id: str, claims: Claims | None) -> StoredObject:
        require(claims, Permission.DATA_READ.value)
        assert claims is not None
        stored = self.store.get(data_id)
        if stored is None:
            raise ObjectNotFound(f"no object {data_id!r}", dataId=data_id)
        if not stored.policy.allows(claims, stored.owner):
            raise Forbidden(
                f"the access policy of {data_id!r} does not include you", reason="policy"
            )
        if stored.status != "anchored":
            raise NotAnchored(f"the anchor of {data_id!r} is not final yet", dataId=data_id)
        return stored

    def _proof_of(self, stored: StoredObject) -> ObjectProof:
        with self.store.pool.connection() as conn:
            proof = object_proof(
                conn, stored.data_id, size=stored.size, content_type=stored.content_type
            )
        if proof is None:
            raise NotAnchored(f"the anchor of {stored.data_id!r} is not projected yet")
        return proof

    def read_with_proof(
        self, data_id: str, claims: Claims | None
    ) -> tuple[StoredObject, ObjectProof]:
        """Authorize and return the object's row and proof (for the routes and GraphQL)."""
        stored = self._readable(data_id, claims)
        return stored, self._proof_of(stored)

    async def _get(self, request: Request, claims: Claims | None) -> Response:
        data_id = _data_id(request)
        stored, proof = await run_in_threadpool(self.read_with_proof, data_id, claims)
        seqs = await run_in_threadpool(self.store.chunk_seqs, data_id)

        async def body() -> AsyncIterator[bytes]:
            for seq in seqs:
                yield await run_in_threadpool(self.store.chunk, data_id, seq)

        doc = proof.to_json()
        headers = {
            "Content-Length": str(stored.size),
            "ETag": f'"{stored.sha256.hex()}"',
            "Cache-Control": "private, no-store",
            "X-Pantheon-Data-Id": urllib.parse.quote(data_id, safe=""),
            "X-Pantheon-SHA256": stored.sha256.hex(),
            "X-Pantheon-Anchor-Tx": proof.tx_id.hex(),
            "X-Pantheon-Anchor-Height": str(proof.height),
            "X-Pantheon-Block-Hash": proof.block_hash.hex(),
            "X-Pantheon-Certificate": proof.certificate.hex(),
            "X-Pantheon-Metadata": urllib.parse.quote(stored.metadata, safe=""),
            "Link": f'</objects/{urllib.parse.quote(data_id, safe="")}/proof>; rel="proof"',
        }
        compact = json.dumps(doc, separators=(",", ":")).encode()
        encoded = base64.urlsafe_b64encode(compact).decode().rstrip("=")
        if len(encoded) <= MAX_PROOF_HEADER_BYTES:
            headers["X-Pantheon-Proof"] = encoded
        return StreamingResponse(body(), media_type=stored.content_type, headers=headers)

    async def _proof(self, request: Request, claims: Claims | None) -> Response:
        data_id = _data_id(request)
        _stored, proof = await run_in_threadpool(self.read_with_proof, data_id, claims)
        return _json(proof.to_json())


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
    args: argparse.Namespace, pool: ConnectionPool[Any], signer: AnchorSigner | None
) -> DataProxy:
    """The proxy of ``pantheon gateway`` (creates its tables if needed)."""
    config = ProxyConfig(max_object_bytes=args.max_object_bytes)
    return DataProxy.create(args.institution, pool, signer, config)

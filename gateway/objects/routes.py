"""The data access proxy's HTTP side: :class:`DataProxy`, its routes and its flags."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.auth.crypto import seal_text
from gateway.auth.permissions import Permission
from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.errors import BadInput, BodyTooLarge, GatewayError, Unavailable, error_body
from gateway.iam.kek import KekStore
from gateway.metrics import GatewayMetrics
from gateway.objects.anchoring import Anchoring, AnchorSigner, EventPublisher
from gateway.objects.errors import (
    ObjectExists,
    ObjectShredded,
    ObjectTampered,
    SignerMissing,
    StreamAborted,
)
from gateway.objects.policy import parse_policy
from gateway.objects.reading import ObjectReader
from gateway.objects.store import (
    DEFAULT_MAX_OBJECT_BYTES,
    ObjectKeys,
    ObjectStore,
    ProxyConfig,
    StoredObject,
    metadata_field,
)
from ledger.context import MAX_METADATA_BYTES, fits_metadata, is_id

log = logging.getLogger("pantheon.gateway")

MAX_CONTENT_TYPE_CHARS = 255
MAX_PROOF_HEADER_BYTES = 12 * 1024
DEFAULT_CONTENT_TYPE = "application/octet-stream"
JSON_TYPE = "application/json"
ClaimsOf = Callable[[Request], Awaitable[Claims | None]]


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

    @property
    def reader(self) -> ObjectReader:
        """The read side over this proxy's store and keys."""
        return ObjectReader(self.institution, self.store, self.keys, self._refused)

    @property
    def anchoring(self) -> Anchoring:
        """The write side over this proxy's store, signer and event publisher."""
        return Anchoring(self.institution, self.store, self.signer, self.events, self.config)

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
        anchored = await run_in_threadpool(self.anchoring.chain_anchor, data_id)
        if anchored is not None and not await run_in_threadpool(
            self.anchoring.has_pending, data_id
        ):
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
                data_id=data_id,
                content_type=content_type,
                metadata=sealed_metadata,
                owner=claims.sub,
                policy=policy,
                pull=pull,
                limit=limit,
                may_replace=lambda old: old.status == "pending",
                key=key,
                institution=self.institution,
            )

        stored = await run_in_threadpool(write)
        tx_id, height = await run_in_threadpool(self.anchoring.anchor, stored)
        await run_in_threadpool(self.anchoring.record, stored, key, tx_id, height, claims.sub)
        body = {
            "data_id": data_id,
            "sha256": stored.sha256.hex(),
            "size": stored.size,
            "content_type": content_type,
            "tx_id": tx_id.hex(),
            "height": height,
        }
        return _json(body, 201)

    async def _get(self, request: Request, claims: Claims | None) -> Response:
        data_id = _data_id(request)
        readable = await run_in_threadpool(self.reader.read_with_proof, data_id, claims)
        row, proof = readable.row, readable.proof
        digests = await run_in_threadpool(self.reader.digests, row)
        chunks = self.reader.plaintext(readable, digests)
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
            "X-Pantheon-Certificate": proof.inclusion.certificate.hex(),
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
        readable = await run_in_threadpool(self.reader.read_with_proof, data_id, claims)
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

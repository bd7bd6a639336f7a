"""Reading an object: authorize, verify every row against the owner's key and the chain,
then stream chunks that are each checked before they go out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from gateway.auth.crypto import CryptoError, DataKey, open_text
from gateway.auth.permissions import Permission
from gateway.auth.tokens import Claims
from gateway.authn import require
from gateway.errors import Forbidden, GatewayError
from gateway.object_crypto import (
    chunk_aad,
    chunk_digest,
    chunk_root,
    grant_mac,
    mac_ok,
    object_mac,
    open_chunk,
)
from gateway.objects.errors import (
    AnchorMismatch,
    LegacyObject,
    NotAnchored,
    ObjectNotFound,
    ObjectShredded,
    ObjectTampered,
)
from gateway.objects.policy import Policy
from gateway.objects.store import ObjectKeys, ObjectRow, ObjectStore, metadata_field
from ledger.proofs import ObjectProof
from projections import read
from projections.read import queries
from readers.object_verify import object_proof


@dataclass(frozen=True, slots=True, kw_only=True)
class Readable:
    """An object the caller may read: its verified row, key, clear metadata and proof."""

    row: ObjectRow
    key: DataKey
    metadata: str
    proof: ObjectProof


Refused = Callable[[str, str, str], None]


@dataclass(frozen=True, slots=True)
class ObjectReader:
    """The read side: every projected row checked before it is acted on, chunks verified as
    they stream; ``refused(what, data_id, message)`` counts and logs each integrity failure."""

    institution: str
    store: ObjectStore
    keys: ObjectKeys | None
    refused: Refused

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
                self.refused("grant", row.data_id, f"grant to {subject!r} does not verify")
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
            self.refused("metadata", data_id, "the owner does not hold the object's key")
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
            self.refused("metadata", data_id, "the metadata row does not verify")
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
            self.refused("metadata", data_id, "the metadata does not open")
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
                self.refused("anchor", row.data_id, f"chain.anchors holds {shown}")
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
            self.refused("anchor", row.data_id, "no proof in the projected chain tables")
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

    def digests(self, row: ObjectRow) -> list[bytes]:
        """The stored chunks' digests, checked against the row's (MAC-verified) chunk root."""
        found = self.store.chunk_digests(row.data_id)
        digests = [d for _, d in found if d is not None]
        if (
            [s for s, _ in found] != list(range(row.chunk_count))
            or len(digests) != row.chunk_count
            or chunk_root(digests) != row.chunk_root
        ):
            self.refused("chunks", row.data_id, "the chunks do not match the chunk root")
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
            self.refused("chunk", row.data_id, f"chunk {seq} does not match its digest")
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
            self.refused("chunk", row.data_id, f"chunk {seq} does not open")
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
            self.refused("content", row.data_id, "the content does not hash to the anchor")
            raise ObjectTampered(
                f"the content of {row.data_id!r} does not hash to its anchor",
                dataId=row.data_id,
                table="objects.chunks",
            )
        if previous is not None:
            yield previous

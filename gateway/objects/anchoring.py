"""Anchoring an upload: its AnchorData on chain, then its events on the IAM topic (D23)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.auth.crypto import DataKey
from gateway.errors import Unavailable
from gateway.governance import Outcome
from gateway.iam.commands import Event
from gateway.iam.errors import IamError
from gateway.object_crypto import grant_mac, object_mac
from gateway.objects.errors import AnchorRejected, NotAnchored, NotRecorded, ObjectExists
from gateway.objects.store import ObjectStore, ProxyConfig, StoredObject
from ledger.results import ResultCode
from projections import read
from projections.objects import projection_name
from projections.read import Conn, queries
from readers.object_verify import object_proof

log = logging.getLogger("pantheon.gateway")

SIGNER_NOTE = (
    "AnchorData is signed with the institution's governance key (--keystore) in the local "
    "deployment; production should register a SERVICE identity for the proxy and sign with it"
)


class EventPublisher(Protocol):
    """Produces events to the institution's IAM topic and waits until ``projection`` applied
    them (:meth:`gateway.iam.service.IamService.publish`)."""

    def publish(self, events: Sequence[Event], *, projection: str) -> None: ...


class AnchorSigner(Protocol):
    """Signs and submits one transaction and waits for its receipt
    (:class:`gateway.governance.Governance` is one)."""

    def submit(self, conn: Conn, operation: str, args: Mapping[str, Any]) -> Outcome: ...


def anchor_metadata(content_type: str, size: int) -> str:
    """The public metadata of an object's AnchorData."""
    return json.dumps({"content_type": content_type, "size": size}, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Anchoring:
    """The write side of a PUT once the upload is stored: anchor its hash on chain, record
    its events, mark it anchored."""

    institution: str
    store: ObjectStore
    signer: AnchorSigner | None
    events: EventPublisher | None
    config: ProxyConfig

    def record(
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

    def chain_anchor(self, data_id: str) -> read.Anchor | None:
        with self.store.pool.connection() as conn:
            return read.anchor(conn, data_id)

    def has_pending(self, data_id: str) -> bool:
        found = self.store.get(data_id)
        return found is not None and found.status == "pending"

    def anchor(self, stored: StoredObject) -> tuple[bytes, int]:
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
                    log.info(
                        "object anchored",
                        extra={"data_id": stored.data_id, "height": outcome.height},
                    )
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

"""Stored objects at rest (D23): chunk sealing and its bindings, row MACs, the pure fold."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.crypto import CryptoError, DataKey
from gateway.object_crypto import (
    chunk_aad,
    chunk_digest,
    grant_mac,
    object_mac,
    open_chunk,
    seal_chunk,
)
from projections.objects import ACCESS, STORED, chunk_root, fold

KEY = DataKey("dk-1", bytes(range(32)))
OTHER = DataKey("dk-2", bytes(range(1, 33)))


def test_a_chunk_opens_only_where_it_was_sealed() -> None:
    aad = chunk_aad("inst", "alice", KEY.key_id, "obj", "up-1", 0)
    sealed = seal_chunk(KEY, aad, b"reading 21.5")
    assert b"reading" not in sealed
    assert open_chunk(KEY, aad, sealed) == b"reading 21.5"
    elsewhere = [
        chunk_aad("inst", "alice", KEY.key_id, "obj", "up-1", 1),  # another position
        chunk_aad("inst", "alice", KEY.key_id, "obj2", "up-1", 0),  # another object
        chunk_aad("inst", "alice", KEY.key_id, "obj", "up-2", 0),  # another upload
        chunk_aad("inst", "carol", KEY.key_id, "obj", "up-1", 0),  # another owner
        chunk_aad("inst-2", "alice", KEY.key_id, "obj", "up-1", 0),  # another institution
    ]
    for other in elsewhere:
        with pytest.raises(CryptoError):
            open_chunk(KEY, other, sealed)
    with pytest.raises(CryptoError):
        open_chunk(OTHER, aad, sealed)  # another key (the owner's was destroyed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(CryptoError):
        open_chunk(KEY, aad, bytes(flipped))


def test_row_macs_bind_every_field() -> None:
    fields: dict[str, Any] = {
        "data_id": "obj",
        "owner": "alice",
        "sha256": bytes(32),
        "size": 5,
        "content_type": "text/plain",
        "metadata": "enc:v1:x",
        "upload_id": "up-1",
        "chunk_count": 1,
        "chunk_root": bytes(32),
    }
    base = object_mac(KEY, "inst", **fields)
    assert object_mac(OTHER, "inst", **fields) != base
    for name, value in fields.items():
        changed = {**fields, name: value + 1 if isinstance(value, int) else value + value[:1]}
        assert object_mac(KEY, "inst", **changed) != base, name
    grant = grant_mac(KEY, "inst", data_id="obj", upload_id="up-1", subject="bob", granted=True)
    assert grant != grant_mac(
        KEY, "inst", data_id="obj", upload_id="up-1", subject="carol", granted=True
    )
    assert grant != grant_mac(
        KEY, "inst", data_id="obj2", upload_id="up-1", subject="bob", granted=True
    )
    assert chunk_root([chunk_digest(b"a"), chunk_digest(b"b")]) != chunk_root(
        [chunk_digest(b"b"), chunk_digest(b"a")]
    )


def _stored(upload: str) -> dict[str, Any]:
    return {
        "event_id": f"e-{upload}",
        "institution_id": "inst",
        "at_ms": 1,
        "object_id": "obj",
        "owner": "alice",
        "sha256": bytes(32),
        "size": 1,
        "content_type": "x",
        "metadata": "",
        "data_key_id": "dk-1",
        "upload_id": upload,
        "chunk_count": 1,
        "chunk_root": bytes(32),
        "anchor_tx": bytes(32),
        "anchor_height": 3,
        "mac": b"m",
        "actor": "alice",
    }


def _access(upload: str, subject: str, granted: bool = True) -> dict[str, Any]:
    return {
        "event_id": "a",
        "institution_id": "inst",
        "at_ms": 2,
        "object_id": "obj",
        "upload_id": upload,
        "subject": subject,
        "granted": granted,
        "mac": b"g",
        "actor": "alice",
    }


def test_fold_last_upload_wins_and_grants_follow_it() -> None:
    objects, grants = fold(
        [
            (STORED, _stored("up-1")),
            (ACCESS, _access("up-1", "bob")),
            (ACCESS, _access("up-1", "carol")),
            (ACCESS, _access("up-1", "carol", False)),
            (ACCESS, _access("up-9", "dave")),  # another upload's grant: ignored
            (STORED, {**_stored("up-1"), "institution_id": "other"}),
        ],
        "inst",
    )
    assert set(objects) == {"obj"} and set(grants) == {("obj", "bob")}
    objects, grants = fold(
        [(STORED, _stored("up-1")), (ACCESS, _access("up-1", "bob")), (STORED, _stored("up-2"))],
        "inst",
    )
    assert objects["obj"][7] == "up-2" and grants == {}
    assert fold([(ACCESS, _access("up-1", "bob"))], "inst") == ({}, {})

"""Layer 2, pure parts: device bundles, the fast wire parser, batch ids and the admission rule.

Theory of operation
-------------------
* ``pantheon.l2.records`` carries two kinds of device-signed messages: a ``DeviceRecord``
  (one reading, :mod:`ledger.devices`) and a ``DeviceBundle`` (many readings of one device,
  one signature over ``BUNDLE_DOMAIN || canonical DeviceBundleBody``; reading ``i`` has
  sequence ``first_sequence + i``). A bundle is one Merkle leaf; a proof of one of its readings
  carries the whole bundle, so the device's signature can be checked offline.
* :func:`parse_l2` reads either kind straight from the wire bytes without building Python
  records: it checks the single-object header, walks the Avro body strictly (minimal varints,
  exact lengths, valid UTF-8, nothing left over, the same rules the codec enforces) and
  returns the signed message, the signature, the sequence range and the leaf. The leaf is the
  canonical record, which *is* the body slice after the 10-byte header (the codec's encoding
  is unique), so nothing is re-encoded. A unit test checks it agrees with the codec.
* :func:`admit` is the batcher's rule for one parsed message, given what is known about the
  device: unknown -> ``UNKNOWN_DEVICE``, inactive -> ``REVOKED_DEVICE``, bad signature ->
  ``BAD_SIGNATURE``, a first sequence not above the device's last accepted one -> ``REPLAY``.
  Sequences must increase per device; gaps are allowed (a device may lose readings).
* A batch id is derived from the institution, topic, partition and offset range only, so a
  batcher that re-submits a sealed batch after a crash sends the same id (the contract answers
  ``ALREADY_EXISTS`` to a second commit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from ledger.devices import DeviceSigned
from ledger.errors import DecodeError, InvalidEvent
from ledger.keys import DEVICE_DOMAIN, KEY_ID_BYTES, SIGNATURE_BYTES, KeyPair
from schemas.codec import HEADER_BYTES, MAGIC, registry

BUNDLE_DOMAIN = b"pantheon/device-bundle/v1\x00"
"""Signature domain of device bundles (distinct from single records)."""

MAX_BUNDLE_READINGS = 10_000

RECORD_KIND = "record"
BUNDLE_KIND = "bundle"


def _header(schema_name: str) -> bytes:
    return MAGIC + registry().by_name(schema_name).fingerprint.to_bytes(8, "little")


RECORD_HEADER = _header("DeviceRecord")
BUNDLE_HEADER = _header("DeviceBundle")


class Reason(StrEnum):
    """Why the batcher refused a message (written to the rejected-records topic)."""

    MALFORMED = "MALFORMED"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"
    REVOKED_DEVICE = "REVOKED_DEVICE"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    REPLAY = "REPLAY"


@dataclass(frozen=True, slots=True, kw_only=True)
class Parsed:
    """A structurally valid Layer-2 message (signature not checked yet)."""

    kind: str
    device_key_id: bytes
    first_sequence: int
    last_sequence: int
    measured_from_ms: int
    measured_to_ms: int
    signed: bytes  # domain || canonical body: what the device signed
    signature: bytes
    leaf: bytes  # canonical DeviceRecord / DeviceBundle: the Merkle leaf data

    @property
    def count(self) -> int:
        """Readings in this message."""
        return self.last_sequence - self.first_sequence + 1


# -- strict Avro reading ---------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag long at ``pos``; minimal encoding only. Returns (value, next position)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= len(data) or pos - start >= 10:
            raise DecodeError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and pos - start > 1:
                raise DecodeError("non-minimal varint")
            break
        shift += 7
    if result >= 1 << 64:
        raise DecodeError("varint out of range")
    return (result >> 1) ^ -(result & 1), pos


def _blob(data: bytes, pos: int) -> tuple[int, int]:
    """Avro bytes/string at ``pos``: returns (start of content, end of content)."""
    length, pos = _varint(data, pos)
    if length < 0 or pos + length > len(data):
        raise DecodeError("bad length")
    return pos, pos + length


def _text(data: bytes, pos: int) -> int:
    start, end = _blob(data, pos)
    try:
        data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("string is not UTF-8") from exc
    return end


def _key_id(data: bytes, pos: int) -> tuple[bytes, int]:
    start, end = _blob(data, pos)
    if end - start != KEY_ID_BYTES:
        raise DecodeError("device key id must be 32 bytes")
    return data[start:end], end


def _signature(data: bytes, pos: int) -> bytes:
    start, end = _blob(data, pos)
    if end != len(data):
        raise DecodeError("trailing bytes")
    if end - start != SIGNATURE_BYTES:
        raise DecodeError("signature must be 64 bytes")
    return data[start:end]


def _parse_record(raw: bytes) -> Parsed:
    pos = HEADER_BYTES
    kid, pos = _key_id(raw, pos)
    seq, pos = _varint(raw, pos)
    measured, pos = _varint(raw, pos)
    pos = _text(raw, pos)
    _, pos = _blob(raw, pos)
    body_end = pos
    signature = _signature(raw, pos)
    if seq < 0:
        raise DecodeError("negative sequence")
    return Parsed(
        kind=RECORD_KIND,
        device_key_id=kid,
        first_sequence=seq,
        last_sequence=seq,
        measured_from_ms=measured,
        measured_to_ms=measured,
        signed=DEVICE_DOMAIN + raw[HEADER_BYTES:body_end],
        signature=signature,
        leaf=raw[HEADER_BYTES:],
    )


def _parse_bundle(raw: bytes) -> Parsed:
    pos = HEADER_BYTES
    kid, pos = _key_id(raw, pos)
    first, pos = _varint(raw, pos)
    pos = _text(raw, pos)
    count = 0
    low, high = 1 << 63, -(1 << 63)
    while True:
        block, pos = _varint(raw, pos)
        if block == 0:
            break
        if block < 0:  # a block with its byte size: valid Avro, never written by our codec
            raise DecodeError("array blocks with sizes are not canonical")
        count += block
        if count > MAX_BUNDLE_READINGS:
            raise DecodeError("too many readings")
        for _ in range(block):
            measured, pos = _varint(raw, pos)
            _, pos = _blob(raw, pos)
            low, high = min(low, measured), max(high, measured)
    body_end = pos
    signature = _signature(raw, pos)
    if first < 0 or count == 0:
        raise DecodeError("a bundle needs a sequence >= 0 and at least one reading")
    return Parsed(
        kind=BUNDLE_KIND,
        device_key_id=kid,
        first_sequence=first,
        last_sequence=first + count - 1,
        measured_from_ms=low,
        measured_to_ms=high,
        signed=BUNDLE_DOMAIN + raw[HEADER_BYTES:body_end],
        signature=signature,
        leaf=raw[HEADER_BYTES:],
    )


def parse_l2(raw: bytes) -> Parsed:
    """Parse a ``DeviceRecord`` or ``DeviceBundle`` message; :class:`DecodeError` otherwise."""
    head = raw[:HEADER_BYTES]
    if head == RECORD_HEADER:
        return _parse_record(raw)
    if head == BUNDLE_HEADER:
        return _parse_bundle(raw)
    raise DecodeError("not a DeviceRecord or DeviceBundle message")


def leaf_message(kind: str, leaf: bytes) -> bytes:
    """The wire message whose leaf is ``leaf`` (inverse of ``Parsed.leaf``)."""
    return (RECORD_HEADER if kind == RECORD_KIND else BUNDLE_HEADER) + leaf


# -- bundles ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceBundle(DeviceSigned):
    """Readings ``first_sequence ..`` of one device under one signature."""

    SCHEMA = "DeviceBundle"
    DOMAIN = BUNDLE_DOMAIN
    device_key_id: bytes
    first_sequence: int
    content_type: str
    readings: tuple[tuple[int, bytes], ...]  # (measured_at_ms, payload)
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.device_key_id) != KEY_ID_BYTES or self.first_sequence < 0:
            raise InvalidEvent("bundle needs a 32-byte key id and a sequence >= 0")
        if not 0 < len(self.readings) <= MAX_BUNDLE_READINGS:
            raise InvalidEvent(f"a bundle holds 1 to {MAX_BUNDLE_READINGS} readings")

    def body(self) -> dict[str, Any]:
        """The ``DeviceBundleBody`` record."""
        return {
            "device_key_id": self.device_key_id,
            "first_sequence": self.first_sequence,
            "content_type": self.content_type,
            "readings": [{"measured_at_ms": m, "payload": p} for m, p in self.readings],
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeviceBundle:
        """Build from a ``DeviceBundle`` record."""
        body = record["body"]
        return cls(
            device_key_id=body["device_key_id"],
            first_sequence=body["first_sequence"],
            content_type=body["content_type"],
            readings=tuple((r["measured_at_ms"], r["payload"]) for r in body["readings"]),
            signature=record["signature"],
        )


def sign_device_bundle(
    device: KeyPair,
    *,
    first_sequence: int,
    content_type: str,
    readings: Sequence[tuple[int, bytes]],
) -> DeviceBundle:
    """Readings signed once by ``device``."""
    unsigned = DeviceBundle(
        device_key_id=device.key_id,
        first_sequence=first_sequence,
        content_type=content_type,
        readings=tuple(readings),
        signature=b"",
    )
    return replace(unsigned, signature=device.sign(BUNDLE_DOMAIN, unsigned.signed_bytes()))


def decode_device_bundle(raw: bytes) -> DeviceBundle:
    """Decode a ``DeviceBundle`` message (signature not checked)."""
    return DeviceBundle.decode(raw)


# -- batches and admission -------------------------------------------------------------------


def batch_id(institution: str, topic: str, partition: int, first: int, last: int) -> str:
    """Deterministic id of the batch of ``topic[partition]`` offsets ``first..last``."""
    if partition < 0 or not 0 <= first <= last:
        raise InvalidEvent("batch ids need a partition >= 0 and ordered offsets")
    value = f"l2:{institution}:{topic}:{partition}:{first}-{last}"
    if len(value) > 128:
        raise InvalidEvent("batch id longer than 128 characters: shorten the topic prefix")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What the chain says about a device key."""

    public_key: bytes
    institution_id: str
    active: bool


def admit(
    parsed: Parsed, device: DeviceInfo | None, signature_ok: bool, last_sequence: int | None
) -> Reason | None:
    """None if the batcher accepts ``parsed``; else the reason it is rejected."""
    if device is None:
        return Reason.UNKNOWN_DEVICE
    if not device.active:
        return Reason.REVOKED_DEVICE
    if not signature_ok:
        return Reason.BAD_SIGNATURE
    if last_sequence is not None and parsed.first_sequence <= last_sequence:
        return Reason.REPLAY
    return None

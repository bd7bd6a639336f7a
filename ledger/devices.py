"""Device records (Layer 2): device-signed IoT readings and their Merkle leaves.

Theory of operation: a ``DeviceRecord`` is a ``DeviceRecordBody`` (device key id, sequence,
measurement time, content type, payload) and the device's Ed25519 signature over
``DEVICE_DOMAIN || canonical body``. The batcher checks the signature against the device's
registered public key, and the leaf of a batch's RFC 6962 tree is the record's canonical bytes,
so a record is provable as record -> leaf -> batch root -> CommitBatch -> final block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

from ledger.errors import DecodeError, InvalidEvent
from ledger.hashing import canonical_bytes
from ledger.keys import DEVICE_DOMAIN, KEY_ID_BYTES, KeyPair, key_id, verify
from schemas.codec import decode, encode
from schemas.errors import CodecError


class DeviceSigned:
    """What every device-signed message shares (a ``DeviceRecord``, a ``DeviceBundle``):
    its record is ``{body, signature}``, its Merkle leaf the canonical record, and its
    signature is the device key's over ``DOMAIN || canonical body``. A subclass is a frozen
    dataclass with ``device_key_id`` and ``signature`` that names its ``SCHEMA`` (the body's
    is ``SCHEMA + "Body"``) and ``DOMAIN`` and builds its ``body``."""

    __slots__ = ()
    SCHEMA: ClassVar[str]
    DOMAIN: ClassVar[bytes]
    device_key_id: bytes
    signature: bytes

    def body(self) -> dict[str, Any]:
        """The body record (what the device signs)."""
        raise NotImplementedError

    def signed_bytes(self) -> bytes:
        """The canonical body: what the signature covers after ``DOMAIN``."""
        return canonical_bytes(f"{self.SCHEMA}Body", self.body())

    def record(self) -> dict[str, Any]:
        """The message's record."""
        return {"body": self.body(), "signature": self.signature}

    def encode(self) -> bytes:
        """Single-object bytes for ``pantheon.l2.records``."""
        return encode(self.SCHEMA, self.record())

    def leaf(self) -> bytes:
        """Leaf data of the batch's Merkle tree: the canonical record."""
        return canonical_bytes(self.SCHEMA, self.record())

    def verify(self, public_key: bytes) -> bool:
        """True iff signed by ``public_key`` and that key is the message's device key."""
        try:
            if key_id(public_key) != self.device_key_id:
                return False
        except InvalidEvent:
            return False
        return verify(public_key, self.signature, self.DOMAIN, self.signed_bytes())

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Self:
        """Build from the message's record."""
        raise NotImplementedError

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        """Decode a message of this kind (signature not checked); :class:`DecodeError`."""
        try:
            _, record = decode(raw, cls.SCHEMA)
            return cls.from_record(record)
        except (CodecError, InvalidEvent, TypeError) as exc:
            raise DecodeError(str(exc)) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord(DeviceSigned):
    """One signed reading of a device."""

    SCHEMA = "DeviceRecord"
    DOMAIN = DEVICE_DOMAIN
    device_key_id: bytes
    sequence: int
    measured_at_ms: int
    content_type: str
    payload: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.device_key_id) != KEY_ID_BYTES or self.sequence < 0:
            raise InvalidEvent("device record needs a 32-byte key id and a sequence >= 0")

    def body(self) -> dict[str, Any]:
        """The ``DeviceRecordBody`` record."""
        return {
            "device_key_id": self.device_key_id,
            "sequence": self.sequence,
            "measured_at_ms": self.measured_at_ms,
            "content_type": self.content_type,
            "payload": self.payload,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeviceRecord:
        """Build from a ``DeviceRecord`` record."""
        return cls(**dict(record["body"]), signature=record["signature"])


def sign_device_record(
    device: KeyPair, *, sequence: int, measured_at_ms: int, content_type: str, payload: bytes
) -> DeviceRecord:
    """A reading signed by ``device``."""
    unsigned = DeviceRecord(
        device_key_id=device.key_id,
        sequence=sequence,
        measured_at_ms=measured_at_ms,
        content_type=content_type,
        payload=payload,
        signature=b"",
    )
    return replace(unsigned, signature=device.sign(DEVICE_DOMAIN, unsigned.signed_bytes()))


def decode_device_record(raw: bytes) -> DeviceRecord:
    """Decode a ``DeviceRecord`` message (signature not checked)."""
    return DeviceRecord.decode(raw)

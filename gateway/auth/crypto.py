"""Encryption of personal fields: AES-GCM under per-user data keys wrapped by a master key.

Theory of operation
-------------------
* The institution's **master key** (32 bytes) comes from a key file of mode 0600 or from the
  environment variable ``PANTHEON_IAM_MASTER_KEY`` (hex or base64url). It is never printed:
  :class:`MasterKey` has a redacted ``repr`` and no ``str`` of its bytes.
* Every user has a random 32-byte **data key** with an id. Its wrapped form is stored in the
  ``iam_data_keys`` table, never on the immutable topic. It is wrapped (AES-GCM) under the
  institution's current **key-encryption key** (:class:`Kek`, 32 random bytes with an id),
  which lives outside PostgreSQL in a 0600 file sealed under the master key
  (:mod:`gateway.iam.kek`). Forgetting a user deletes their row, re-wraps every other data key
  under a new KEK and destroys the old KEK file (**crypto-shredding**, D25): old copies of the
  wrapped key (WAL, dead tuples, backups) are then wrapped under a key that no longer exists.
  (Rows written before D25 are wrapped under the master key itself: ``kek_id`` ``""``.)
* Each personal field is sealed on its own: ``01 || nonce(12) || AES-GCM(data key, value)``
  with associated data binding the ciphertext to institution, user, data key id and field
  name, so a ciphertext moved to another user, field or institution does not open.
* A **profile** is a small JSON document ``{"k": data key id, "f": {field: base64 ciphertext}}``
  (field names are visible, values are not).
* Every failure (wrong key, tampered bytes, wrong binding) raises :class:`CryptoError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
VERSION = b"\x01"
ENV_VAR = "PANTHEON_IAM_MASTER_KEY"
SEALED_TEXT_PREFIX = "enc:v1:"
MASTER_TEXT_PREFIX = "menc:v1:"


class CryptoError(ValueError):
    """A key is missing or malformed, or a ciphertext does not open."""


@dataclass(frozen=True, slots=True)
class MasterKey:
    """The institution's key-encryption key. Its bytes never appear in ``repr``."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise CryptoError(f"a master key has {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"


@dataclass(frozen=True, slots=True)
class Kek:
    """A key-encryption key (wraps data keys) and its id. Its bytes never appear in ``repr``."""

    kek_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES or not self.kek_id:
            raise CryptoError(f"a key-encryption key has an id and {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"Kek({self.kek_id!r}, <redacted>)"


def new_kek() -> Kek:
    """A fresh random key-encryption key with a random id."""
    return Kek(f"kek-{secrets.token_hex(8)}", secrets.token_bytes(KEY_BYTES))


@dataclass(frozen=True, slots=True)
class DataKey:
    """One user's data-encryption key and its id."""

    key_id: str
    key: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"DataKey({self.key_id!r}, <redacted>)"


def _decode_key_text(text: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 2 * KEY_BYTES else b""
    except ValueError:
        raw = b""
    if not raw:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error):
            raw = b""
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"a master key is {KEY_BYTES} bytes, hex or base64url encoded")
    return raw


def load_master_key(path: Path | None = None, env: Mapping[str, str] | None = None) -> MasterKey:
    """The master key from ``path`` (mode 0600 or stricter) or else the environment."""
    if path is not None:
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise CryptoError(f"cannot read the master key file {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CryptoError(f"{path} is accessible by others (mode {mode & 0o777:o}); chmod 600")
        return MasterKey(_decode_key_text(text))
    value = (os.environ if env is None else env).get(ENV_VAR)
    if not value:
        raise CryptoError(f"no master key: give a key file or set {ENV_VAR}")
    return MasterKey(_decode_key_text(value))


def create_master_key_file(path: Path) -> MasterKey:
    """Write a new random master key to ``path`` (created 0600; never overwritten)."""
    key = secrets.token_bytes(KEY_BYTES)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CryptoError(f"{path} exists; refusing to overwrite a master key") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key.hex() + "\n")
    return MasterKey(key)


def _aad(*parts: str) -> bytes:
    return b"\x00".join(p.encode("utf-8") for p in ("pantheon-iam", *parts))


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[:1] != VERSION:
        raise CryptoError("not a sealed value")
    try:
        return AESGCM(key).decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)
    except InvalidTag:
        raise CryptoError("ciphertext does not open (wrong key, binding or tampered)") from None


def seal_with_master(master: MasterKey, purpose: str, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under the master key, bound to ``purpose``."""
    return _seal(master.key, plaintext, _aad("master", purpose))


def open_with_master(master: MasterKey, purpose: str, sealed: bytes) -> bytes:
    """Inverse of :func:`seal_with_master`."""
    return _open(master.key, sealed, _aad("master", purpose))


def new_data_key() -> DataKey:
    """A fresh random data key with a random id."""
    return DataKey(f"dk-{secrets.token_hex(8)}", secrets.token_bytes(KEY_BYTES))


def _wrap_aad(wrapper: MasterKey | Kek, institution: str, user_id: str, key_id: str) -> bytes:
    if isinstance(wrapper, Kek):
        return _aad("data-key", institution, user_id, key_id, wrapper.kek_id)
    return _aad("data-key", institution, user_id, key_id)


def wrap_data_key(wrapper: MasterKey | Kek, institution: str, user_id: str, dk: DataKey) -> bytes:
    """The data key encrypted under a KEK (or, before D25, the master key), bound to
    institution, user, key id (and KEK id)."""
    return _seal(wrapper.key, dk.key, _wrap_aad(wrapper, institution, user_id, dk.key_id))


def unwrap_data_key(
    wrapper: MasterKey | Kek, institution: str, user_id: str, key_id: str, wrapped: bytes
) -> DataKey:
    """Inverse of :func:`wrap_data_key`."""
    return DataKey(
        key_id, _open(wrapper.key, wrapped, _wrap_aad(wrapper, institution, user_id, key_id))
    )


def seal_field(dk: DataKey, institution: str, user_id: str, name: str, value: str) -> bytes:
    """One personal field, sealed under the user's data key."""
    return _seal(
        dk.key, value.encode("utf-8"), _aad("field", institution, user_id, dk.key_id, name)
    )


def open_field(dk: DataKey, institution: str, user_id: str, name: str, sealed: bytes) -> str:
    """Inverse of :func:`seal_field`."""
    raw = _open(dk.key, sealed, _aad("field", institution, user_id, dk.key_id, name))
    return raw.decode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal_profile(dk: DataKey, institution: str, user_id: str, fields: Mapping[str, str]) -> bytes:
    """A profile document: every field sealed separately, plus the data key id."""
    sealed = {
        n: _b64(seal_field(dk, institution, user_id, n, v)) for n, v in sorted(fields.items())
    }
    return json.dumps({"k": dk.key_id, "f": sealed}, sort_keys=True).encode("utf-8")


def _profile_doc(blob: bytes) -> tuple[str, dict[str, bytes]]:
    try:
        doc = json.loads(blob)
        key_id = doc["k"]
        fields = {str(n): base64.b64decode(v, validate=True) for n, v in doc["f"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise CryptoError("not a sealed profile") from None
    if not isinstance(key_id, str):
        raise CryptoError("not a sealed profile")
    return key_id, fields


def profile_key_id(blob: bytes) -> str:
    """The id of the data key that sealed a profile."""
    return _profile_doc(blob)[0]


def open_profile(dk: DataKey, institution: str, user_id: str, blob: bytes) -> dict[str, str]:
    """Every field of a sealed profile, in clear."""
    key_id, fields = _profile_doc(blob)
    if key_id != dk.key_id:
        raise CryptoError(f"profile sealed under {key_id}, not {dk.key_id}")
    return {n: open_field(dk, institution, user_id, n, c) for n, c in fields.items()}


def seal_text(dk: DataKey, institution: str, user_id: str, name: str, value: str) -> str:
    """A sealed field as text (``enc:v1:<base64>``), for string fields of events."""
    return SEALED_TEXT_PREFIX + _b64(seal_field(dk, institution, user_id, name, value))


def _sealed_bytes(text: str, prefix: str) -> bytes:
    if not text.startswith(prefix):
        raise CryptoError("not a sealed text")
    try:
        return base64.b64decode(text[len(prefix) :], validate=True)
    except (ValueError, binascii.Error):
        raise CryptoError("not a sealed text") from None


def open_text(dk: DataKey, institution: str, user_id: str, name: str, text: str) -> str:
    """Inverse of :func:`seal_text`."""
    return open_field(dk, institution, user_id, name, _sealed_bytes(text, SEALED_TEXT_PREFIX))


def seal_text_with_master(master: MasterKey, purpose: str, value: str) -> str:
    """``value`` sealed under the master key, bound to ``purpose``, as text
    (``menc:v1:<base64>``): for event fields only the gateway may write (D70)."""
    return MASTER_TEXT_PREFIX + _b64(seal_with_master(master, purpose, value.encode("utf-8")))


def open_text_with_master(master: MasterKey, purpose: str, text: str) -> str:
    """Inverse of :func:`seal_text_with_master`; :class:`CryptoError` for anything else."""
    raw = open_with_master(master, purpose, _sealed_bytes(text, MASTER_TEXT_PREFIX))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("not a sealed text") from None

"""The one Ed25519 verifier of the system: ZIP-215 rules, single and batch (decisions D34).

Theory of operation
-------------------
* Every signature on the ledger (transactions, votes, device records, IAM events) is checked
  through :func:`verify` or :func:`verify_batch` (via :mod:`ledger.keys`), so validators,
  projectors, the audit, ``pantheon verify``, the data proxy and the SDK accept exactly the
  same signatures: those of the ZIP-215 reference, :mod:`ledger.ed25519_zip215`.
* **Native** (when the compiled extension ``pantheon_native`` is importable; ``./dev`` builds
  it where ``cargo`` exists): ``ed25519-zebra`` verifies single signatures, and batches with
  one random linear combination; a failed batch is re-checked item by item, so each answer
  equals the single one. It releases the GIL while verifying.
* **Fallback** (no extension): OpenSSL, through ``cryptography``. OpenSSL's rules are
  stricter than ZIP-215's (canonical encodings, the cofactorless equation), so every
  signature it accepts is ZIP-215-valid and its "yes" is final; its "no" is asked again of the
  pure reference, so the edge cases (small-order and non-canonical points, signatures valid
  only under the cofactored equation) get the ZIP-215 answer. A rejected signature then costs a
  few milliseconds of Python: the fallback is for machines without a Rust toolchain, not for
  production validators. A batch is a loop of single verifications.
* Importing a compiled module is not I/O; the core stays pure.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import ModuleType
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import ed25519_zip215 as reference

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

Item = tuple[bytes, bytes, bytes]  # public key, signature, signed message


def _load_native() -> ModuleType | None:
    try:
        import pantheon_native  # noqa: PLC0415 - optional compiled extension
    except ImportError:
        return None
    return cast(ModuleType, pantheon_native)


_native = _load_native()
#: Which verifier this process uses: ``"native"`` or ``"openssl+reference"``.
BACKEND = "native" if _native is not None else "openssl+reference"


@functools.lru_cache(maxsize=4096)
def _openssl_key(public_key: bytes) -> Ed25519PublicKey | None:
    """Parsed public keys, by their bytes (a chain has few senders; parsing costs 5%)."""
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        return None


def _openssl_accepts(public_key: bytes, signature: bytes, message: bytes) -> bool:
    key = _openssl_key(public_key)
    if key is None:
        return False
    try:
        key.verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def fallback_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """ZIP-215 verification without the extension: OpenSSL's yes, else the reference's answer."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    public_key, signature, message = bytes(public_key), bytes(signature), bytes(message)
    return _openssl_accepts(public_key, signature, message) or reference.verify(
        public_key, signature, message
    )


def fallback_verify_batch(items: Sequence[Item]) -> list[bool]:
    """:func:`fallback_verify` of each item."""
    return [fallback_verify(public, signature, message) for public, signature, message in items]


def native_available() -> bool:
    """Whether the compiled extension is loaded."""
    return _native is not None


def native_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """The extension's single verification (raises RuntimeError without it)."""
    if _native is None:
        raise RuntimeError("pantheon_native is not installed")
    return cast(bool, _native.verify(bytes(public_key), bytes(signature), bytes(message)))


def native_verify_batch(items: Sequence[Item]) -> list[bool]:
    """The extension's batch verification (raises RuntimeError without it)."""
    if _native is None:
        raise RuntimeError("pantheon_native is not installed")
    try:
        answers = _native.verify_batch(items if isinstance(items, list) else list(items))
    except TypeError:  # bytes-like values other than bytes and bytearray
        answers = _native.verify_batch([(bytes(k), bytes(s), bytes(m)) for k, s, m in items])
    return cast(list[bool], answers)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a ZIP-215-valid Ed25519 signature of ``message``."""
    if _native is not None:
        return native_verify(public_key, signature, message)
    return fallback_verify(public_key, signature, message)


def verify_batch(items: Sequence[Item]) -> list[bool]:
    """One answer per ``(public key, signature, message)``, each equal to :func:`verify`'s."""
    if not items:
        return []
    if _native is not None:
        return native_verify_batch(items)
    return fallback_verify_batch(items)

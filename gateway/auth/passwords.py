"""Password hashing with scrypt: per-hash random salt, parameters inside the hash string.

Theory of operation
-------------------
* A hash string is ``scrypt$<log2 n>$<r>$<p>$<salt b64>$<digest b64>``: everything needed to
  verify it travels with it, so parameters can be raised later and old hashes still verify;
  :func:`needs_rehash` tells when a hash is weaker than the current parameters (rehash at the
  next successful login).
* Verification compares digests with :func:`hmac.compare_digest` (constant time).
* A malformed hash string verifies as ``False``; it never raises.
* :data:`DEFAULT` costs about 32 MiB and tens of milliseconds per hash; tests use
  :data:`FAST` (never in production).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SCHEME = "scrypt"
SALT_BYTES = 16
DIGEST_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class ScryptParams:
    """scrypt cost: ``n = 2**log_n``, block size ``r``, parallelism ``p``."""

    log_n: int = 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (1 <= self.log_n <= 22 and 1 <= self.r <= 32 and 1 <= self.p <= 16):
            raise ValueError(f"scrypt parameters out of range: {self}")


DEFAULT = ScryptParams()
FAST = ScryptParams(log_n=4, r=8, p=1)


class WeakPassword(ValueError):
    """The password is too short or too long."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(salt=salt, length=DIGEST_BYTES, n=1 << params.log_n, r=params.r, p=params.p)
    return kdf.derive(password.encode("utf-8"))


def check_password_policy(password: str) -> None:
    """Raise :class:`WeakPassword` unless ``password`` has a sane length."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPassword(f"a password has at most {MAX_PASSWORD_CHARS} characters")


def hash_password(
    password: str, params: ScryptParams = DEFAULT, *, salt: bytes | None = None
) -> str:
    """The hash string of ``password`` with a fresh random salt (or ``salt``, for vectors)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _derive(password, salt, params)
    return f"{SCHEME}${params.log_n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return None
    try:
        params = ScryptParams(log_n=int(parts[1]), r=int(parts[2]), p=int(parts[3]))
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if len(salt) < 8 or len(digest) != DIGEST_BYTES:
        return None
    return params, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches the hash string ``stored`` (constant-time compare)."""
    parsed = _parse(stored)
    if parsed is None or len(password) > MAX_PASSWORD_CHARS:
        return False
    params, salt, digest = parsed
    return hmac.compare_digest(_derive(password, salt, params), digest)


def needs_rehash(stored: str, params: ScryptParams = DEFAULT) -> bool:
    """True if ``stored`` is malformed or cheaper than ``params``."""
    parsed = _parse(stored)
    if parsed is None:
        return True
    old = parsed[0]
    return old.log_n < params.log_n or old.r < params.r or old.p < params.p


def dummy_verify(password: str, params: ScryptParams = DEFAULT) -> None:
    """Spend the time of one verification (for unknown logins: no user enumeration by timing)."""
    _derive(password, b"\x00" * SALT_BYTES, params)

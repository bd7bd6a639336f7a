"""Ed25519 verification under the ZIP-215 rules, in plain Python: the reference (the oracle).

Theory of operation
-------------------
* Every verifier of the system accepts exactly the signatures this module accepts
  (decisions D34): the compiled extension (``pantheon_native``, built on ``ed25519-zebra``),
  its batch verification, and the fallback of :mod:`ledger.signatures`. The tests feed all
  of them the published edge cases and random hostile input and require identical answers.
* The rules (ZIP-215, as Zcash adopted them so that batch and single verification agree):

  - ``A`` (the public key) and ``R`` (the first half of the signature) are 32-byte point
    encodings: bit 255 is the sign of x, bits 0-254 are y. A y of ``p`` or more (a
    non-canonical encoding, possible for y < 19) is accepted and reduced mod p; an encoding
    whose x^2 has no square root is rejected; x = 0 with the sign bit set is accepted.
    Small-order and mixed-order points are accepted.
  - ``S`` (the second half) must be canonical: ``S < L`` as a little-endian integer.
  - ``k = SHA-512(R_bytes || A_bytes || M)`` over the bytes *as given* (never re-encoded).
  - The cofactored equation holds: ``[8][S]B = [8]R + [8][k]A``.

* Written for clarity, not speed (a few milliseconds a signature): the point formulas are
  RFC 8032's (complete on this curve, so identity, doubling and small-order points need no
  special cases). ``k`` is reduced mod L before the multiplication: ``[8][k]A = [8][k mod L]A``
  for every point ``A`` on the curve, whose order divides ``8L``.
* Pure: no I/O, no randomness, no clock.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, T = XY/Z
IDENTITY: Point = (0, 1, 1, 0)


def _add(a: Point, b: Point) -> Point:
    """RFC 8032's point addition (complete: also doubling and the identity)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _negate(a: Point) -> Point:
    x, y, z, t = a
    return (-x % P, y, z, -t % P)


def scalar_mult(scalar: int, point: Point) -> Point:
    """``[scalar]point`` for a non-negative ``scalar`` (double and add)."""
    result = IDENTITY
    addend = point
    while scalar > 0:
        if scalar & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        scalar >>= 1
    return result


def is_identity(point: Point) -> bool:
    """Whether ``point`` is the neutral element (0, 1)."""
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def _sqrt_ratio(u: int, v: int) -> int | None:
    """A square root of ``u / v`` mod p, or None if there is none (RFC 8032, 5.1.3)."""
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    check = v * x * x % P
    if check == u % P:
        return x
    if check == -u % P:
        return x * SQRT_M1 % P
    return None


def decode_point(encoded: bytes) -> Point | None:
    """The point of a 32-byte encoding under ZIP-215, or None (no square root, bad length)."""
    if len(encoded) != PUBLIC_KEY_BYTES:
        return None
    n = int.from_bytes(encoded, "little")
    sign = n >> 255
    y = (n & ((1 << 255) - 1)) % P  # non-canonical y (>= p) accepted, reduced
    x = _sqrt_ratio(y * y - 1, D * y * y + 1)
    if x is None:
        return None
    if x & 1 != sign:
        x = -x % P  # x = 0 with the sign bit set stays 0: accepted
    return (x, y, 1, x * y % P)


def encode_point(point: Point) -> bytes:
    """The canonical 32-byte encoding of ``point`` (y < p, sign bit = x mod 2)."""
    x, y, z, _ = point
    inverse = pow(z, P - 2, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def is_strong_public_key(encoded: bytes) -> bool:
    """Whether ``encoded`` is a canonical encoding of a point that is not of small order.

    ZIP-215 verification accepts small-order keys, for which one signature with ``S = 0``
    verifies for every message; registration refuses them (and non-canonical encodings),
    so no registered key can be forged that way.
    """
    point = decode_point(encoded)
    if point is None or encode_point(point) != bytes(encoded):
        return False
    return not is_identity(scalar_mult(8, point))


def _base_point() -> Point:
    y = 4 * pow(5, P - 2, P) % P
    point = decode_point(y.to_bytes(32, "little"))
    assert point is not None
    return point


BASE = _base_point()


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff ``signature`` is a valid ZIP-215 Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    a = decode_point(public_key)
    r = decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    digest = hashlib.sha512(bytes(signature[:32]) + bytes(public_key) + bytes(message)).digest()
    k = int.from_bytes(digest, "little") % L
    # [S]B - R - [k]A, then times the cofactor 8 (three doublings)
    q = _add(scalar_mult(s, BASE), _negate(_add(r, scalar_mult(k, a))))
    for _ in range(3):
        q = _add(q, q)
    return is_identity(q)

"""Naive Merkle tree of RFC 6962 section 2.1, written straight from the definitions.

Theory of operation: this module is the test oracle for ``ledger.merkle``. It shares no code
with it (not even the hash helpers) and favours literal transcription over speed: MTH, PATH,
PROOF and SUBPROOF recurse on slices exactly as the RFC writes them, with ``k`` the largest
power of two smaller than ``n``. The verifiers invert those same recursions (they consume the
proof from its end, where the RFC appends the sibling of the top split) instead of using the
bit-walking algorithms of RFC 9162. Shape errors raise plain ``ValueError``. Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def leaf(data: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return _sha256(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    return _sha256(b"\x01" + left + right)


def mth(d: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash MTH(D[n]) of the raw inputs ``d``."""
    n = len(d)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return leaf(d[0])
    k = _k(n)
    return node(mth(d[0:k]), mth(d[k:n]))


def path(m: int, d: Sequence[bytes]) -> list[bytes]:
    """The audit path PATH(m, D[n]) for 0 <= m < n."""
    n = len(d)
    if not 0 <= m < n:
        raise ValueError("PATH needs 0 <= m < n")
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, d[0:k]), mth(d[k:n])]
    return [*path(m - k, d[k:n]), mth(d[0:k])]


def proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    """The consistency proof PROOF(m, D[n]) = SUBPROOF(m, D[n], true) for 0 < m <= n."""
    if not 0 < m <= len(d):
        raise ValueError("PROOF needs 0 < m <= n")
    return subproof(m, d, True)


def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 2.1.2."""
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[0:k], b), mth(d[k:n])]
    return [*subproof(m - k, d[k:n], False), mth(d[0:k])]


def path_length(m: int, n: int) -> int:
    """len(PATH(m, D[n])), from the recursion alone."""
    if n == 1:
        return 0
    k = _k(n)
    return 1 + (path_length(m, k) if m < k else path_length(m - k, n - k))


def proof_length(m: int, n: int, b: bool = True) -> int:
    """len(SUBPROOF(m, D[n], b)), from the recursion alone."""
    if m == n:
        return 0 if b else 1
    k = _k(n)
    return 1 + (proof_length(m, k, b) if m <= k else proof_length(m - k, n - k, False))


def root_from_path(leaf_hash: bytes, m: int, n: int, p: Sequence[bytes]) -> bytes:
    """The root that audit path ``p`` implies for leaf hash ``leaf_hash`` at m in D[n]."""
    if len(p) != path_length(m, n):
        raise ValueError("audit path has the wrong length")
    if n == 1:
        return leaf_hash
    k = _k(n)
    if m < k:
        return node(root_from_path(leaf_hash, m, k, p[:-1]), p[-1])
    return node(p[-1], root_from_path(leaf_hash, m - k, n - k, p[:-1]))


def roots_from_proof(
    old_root: bytes, m: int, n: int, p: Sequence[bytes], b: bool = True
) -> tuple[bytes, bytes]:
    """The (old, new) roots that SUBPROOF ``p`` implies, given the old root MTH(D[0:m])."""
    if not 0 < m <= n or len(p) != proof_length(m, n, b):
        raise ValueError("consistency proof has the wrong shape")
    if m == n:
        return (old_root, old_root) if b else (p[0], p[0])
    k = _k(n)
    if m <= k:
        old, new = roots_from_proof(old_root, m, k, p[:-1], b)
        return old, node(new, p[-1])
    old, new = roots_from_proof(old_root, m - k, n - k, p[:-1], False)
    return node(p[-1], old), node(p[-1], new)

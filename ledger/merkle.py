"""Merkle trees and proofs of RFC 6962 / RFC 9162 section 2.1.

Theory of operation:

* A leaf hash is ``SHA-256(0x00 || data)``, an interior node ``SHA-256(0x01 || left || right)``
  and the empty tree hashes to ``SHA-256("")``. The prefixes keep leaves and nodes apart.
* The tree over ``n`` leaves splits at ``k``, the largest power of two below ``n``. Building it
  level by level (pair nodes from the left, carry an unpaired last node up unchanged) gives the
  same tree, so every subtree ``D[lo:hi]`` the RFC names is one node of some level: the node at
  level ``h`` and index ``j`` covers leaves ``[j * 2**h, min((j + 1) * 2**h, n))``.
* Proofs are lists of sibling hashes, deepest first, exactly as PATH and PROOF of RFC 6962.
* Verification follows the bit-walking algorithms of RFC 9162 2.1.3.2 and 2.1.4.2. Before any
  hashing it checks, in this order: sizes and index, the number of proof nodes (which the sizes
  fix), then the length of every hash. Each kind of mismatch has exactly one error class; a
  successful verification returns ``None``. A proof binds a size only through its shape
  (leaf 0 of 3 has the same path in a tree of 4): trust sizes only alongside their signed root.
* Everything here is pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "InvalidHashLengthError",
    "InvalidIndexError",
    "InvalidProofLengthError",
    "InvalidSizeError",
    "MerkleError",
    "RootMismatchError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_hashes",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_hash",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

_sha256 = hashlib.sha256
EMPTY_ROOT: bytes = _sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string."""


class MerkleError(ValueError):
    """Base class of every error raised by this module."""


class InvalidIndexError(MerkleError):
    """A leaf index is negative or not below the tree size."""


class InvalidSizeError(MerkleError):
    """A tree size is out of range (empty tree, or old size above new size)."""


class InvalidProofLengthError(MerkleError):
    """A proof has the wrong number of nodes for its sizes (too few, or trailing data)."""


class InvalidHashLengthError(MerkleError):
    """A hash (root, leaf hash or proof node) is not HASH_SIZE bytes long."""


class RootMismatchError(MerkleError):
    """A proof is well formed but does not lead to the expected root(s)."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All levels of the tree, leaf hashes first and the root level last (non-empty input)."""
    level = list(leaf_hashes)
    levels = [level]
    sha = _sha256
    while len(level) > 1:
        up = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        levels.append(up)
        level = up
    return levels


def _hash_leaves(leaves: Sequence[bytes]) -> list[bytes]:
    sha = _sha256
    return [sha(b"\x00" + data).digest() for data in leaves]


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidHashLengthError(f"{what} has {len(value)} bytes, expected {HASH_SIZE}")


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash of a tree whose leaves are already leaf-hashed.

    Raises InvalidHashLengthError if a leaf hash is not HASH_SIZE bytes long.
    """
    for i, h in enumerate(leaf_hashes):
        _check_hash(h, f"leaf hash {i}")
    if not leaf_hashes:
        return EMPTY_ROOT
    return _levels(leaf_hashes)[-1][0]


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle Tree Hash (MTH) of the raw leaf data ``leaves``."""
    if not leaves:
        return EMPTY_ROOT
    return _levels(_hash_leaves(leaves))[-1][0]


def _node(levels: list[list[bytes]], lo: int, hi: int) -> bytes:
    """Hash of the RFC subtree over leaves ``[lo, hi)``, read from the precomputed levels."""
    height = (hi - lo - 1).bit_length()
    return levels[height][lo >> height]


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (``size >= 2``)."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path PATH(index, leaves) of RFC 6962 2.1.1, deepest sibling first.

    Raises InvalidIndexError unless ``0 <= index < len(leaves)``.
    """
    if not 0 <= index < len(leaves):
        raise InvalidIndexError(f"index {index} out of range for tree size {len(leaves)}")
    levels = _levels(_hash_leaves(leaves))
    siblings: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_node(levels, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_node(levels, lo, lo + k))
            lo += k
    siblings.reverse()
    return siblings


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return PROOF(old_size, leaves) of RFC 6962 2.1.2 (empty when old_size == len(leaves)).

    Raises InvalidSizeError unless ``0 < old_size <= len(leaves)``.
    """
    new_size = len(leaves)
    if not 0 < old_size <= new_size:
        raise InvalidSizeError(f"old size {old_size} out of range for tree size {new_size}")
    levels = _levels(_hash_leaves(leaves))
    siblings: list[bytes] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append(_node(levels, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_node(levels, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        siblings.append(_node(levels, lo, hi))
    siblings.reverse()
    return siblings


def _path_sides(fn: int, sn: int) -> list[bool]:
    """Dry run of the RFC 9162 proof loop: for each node, True if it lies on the left.

    The loop consumes one node per step until ``sn`` reaches 0, so the length of the result is
    the exact number of nodes a valid proof has.
    """
    sides: list[bool] = []
    while sn > 0:
        if fn & 1 or fn == sn:
            sides.append(True)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sides.append(False)
        fn >>= 1
        sn >>= 1
    return sides


def _check_proof(proof: Sequence[bytes], expected_nodes: int, roots: Sequence[bytes]) -> None:
    if len(proof) != expected_nodes:
        raise InvalidProofLengthError(f"proof has {len(proof)} nodes, expected {expected_nodes}")
    for i, r in enumerate(roots):
        _check_hash(r, f"root {i}")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof node {i}")


def _inclusion_sides(
    index: int, size: int, proof: Sequence[bytes], hashes: Sequence[bytes]
) -> list[bool]:
    """Check the preconditions of an inclusion proof; return the side of each proof node."""
    if size < 1:
        raise InvalidSizeError(f"tree size {size} has no leaves")
    if not 0 <= index < size:
        raise InvalidIndexError(f"index {index} out of range for tree size {size}")
    sides = _path_sides(index, size - 1)
    _check_proof(proof, len(sides), hashes)
    return sides


def _finish_inclusion(
    r: bytes, sides: list[bool], proof: Sequence[bytes], expected_root: bytes
) -> None:
    for p, left in zip(proof, sides, strict=True):
        r = node_hash(p, r) if left else node_hash(r, p)
    if r != expected_root:
        raise RootMismatchError(f"computed root {r.hex()} != expected {expected_root.hex()}")


def verify_inclusion_hash(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Check that ``proof`` shows leaf hash ``leaf_hash`` at ``index`` in the tree of ``size``.

    Preconditions, checked in order before any hashing: ``size >= 1`` (InvalidSizeError),
    ``0 <= index < size`` (InvalidIndexError), ``len(proof)`` equal to the path length those
    fix (InvalidProofLengthError), every hash HASH_SIZE bytes (InvalidHashLengthError). A
    well-formed proof leading elsewhere raises RootMismatchError. Returns None on success.
    """
    sides = _inclusion_sides(index, size, proof, (expected_root, leaf_hash))
    _finish_inclusion(leaf_hash, sides, proof, expected_root)


def verify_inclusion(
    leaf_data: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Like verify_inclusion_hash, for raw leaf data (hashed with leaf_hash after the checks)."""
    sides = _inclusion_sides(index, size, proof, (expected_root,))
    _finish_inclusion(leaf_hash(leaf_data), sides, proof, expected_root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    Preconditions, checked in order before any hashing: ``0 < old_size <= new_size``
    (InvalidSizeError; RFC 9162 defines proofs for a non-empty old tree only), ``len(proof)``
    equal to what the sizes fix, zero when the sizes are equal (InvalidProofLengthError), every
    hash HASH_SIZE bytes (InvalidHashLengthError). If either computed root differs from the
    given one, RootMismatchError. Returns None on success.
    """
    if not 0 < old_size <= new_size:
        raise InvalidSizeError(f"need 0 < old size <= new size, got {old_size}, {new_size}")
    roots = (old_root, new_root)
    if old_size == new_size:
        _check_proof(proof, 0, roots)
        if old_root != new_root:
            raise RootMismatchError("equal sizes but different roots")
        return
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    sides = _path_sides(fn, sn)
    seeded = old_size & (old_size - 1) == 0  # power of two: the old root is the seed
    _check_proof(proof, len(sides) + (0 if seeded else 1), roots)
    nodes = list(proof) if not seeded else [old_root, *proof]
    fr = sr = nodes[0]
    for c, left in zip(nodes[1:], sides, strict=True):
        if left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != old_root:
        raise RootMismatchError(f"computed old root {fr.hex()} != expected {old_root.hex()}")
    if sr != new_root:
        raise RootMismatchError(f"computed new root {sr.hex()} != expected {new_root.hex()}")

"""Generate the Merkle proof test vectors: ``python -m tests.vectors.generate_merkle``.

Deterministic: leaf ``i`` is the UTF-8 bytes of ``f"leaf-{i}"``. Proofs, roots and every
``expected_error`` come from the naive reference (``ledger.merkle_reference``), never from the
fast module under test. Negative cases mutate one valid case in one way each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ledger import merkle_reference as ref

VECTOR_DIR = Path(__file__).resolve().parent
INCLUSION_FILE = VECTOR_DIR / "merkle_inclusion.json"
CONSISTENCY_FILE = VECTOR_DIR / "merkle_consistency.json"

Case = dict[str, Any]
HASH_SIZE = 32

SMALL_SIZES = range(1, 21)
LARGE_SIZES = (31, 32, 33, 64, 65, 127, 128, 129, 1000, 1024, 1025)
NEGATIVE_SIZES = (1, 2, 3, 5, 7, 8, 13, 20, 129)


def leaves(n: int) -> list[bytes]:
    """The first ``n`` leaves of every vector tree."""
    return [f"leaf-{i}".encode() for i in range(n)]


def flip(value: bytes, bit: int = 0) -> bytes:
    """``value`` with one bit flipped (bit counted from the start, modulo its length)."""
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(out)


def inclusion_error(
    leaf_data: bytes, index: int, size: int, p: list[bytes], root: bytes
) -> str | None:
    """The error ``verify_inclusion`` must raise for these inputs, decided with the reference."""
    if size < 1:
        return "InvalidSizeError"
    if not 0 <= index < size:
        return "InvalidIndexError"
    if len(p) != ref.path_length(index, size):
        return "InvalidProofLengthError"
    if any(len(h) != HASH_SIZE for h in [root, *p]):
        return "InvalidHashLengthError"
    if ref.root_from_path(ref.leaf(leaf_data), index, size, p) != root:
        return "RootMismatchError"
    return None


def consistency_error(
    old: int, new: int, old_root: bytes, new_root: bytes, p: list[bytes]
) -> str | None:
    """The error ``verify_consistency`` must raise for these inputs, decided with the reference."""
    if not 0 < old <= new:
        return "InvalidSizeError"
    if len(p) != ref.proof_length(old, new):
        return "InvalidProofLengthError"
    if any(len(h) != HASH_SIZE for h in [old_root, new_root, *p]):
        return "InvalidHashLengthError"
    if ref.roots_from_proof(old_root, old, new, p) != (old_root, new_root):
        return "RootMismatchError"
    return None


def _inclusion(desc: str, data: bytes, index: int, size: int, p: list[bytes], root: bytes) -> Case:
    return {
        "description": desc,
        "leaf_data": data.hex(),
        "leaf_index": index,
        "tree_size": size,
        "proof": [h.hex() for h in p],
        "root": root.hex(),
        "expected_error": inclusion_error(data, index, size, p, root),
    }


def _consistency(desc: str, old: int, new: int, o: bytes, n: bytes, p: list[bytes]) -> Case:
    return {
        "description": desc,
        "old_size": old,
        "new_size": new,
        "old_root": o.hex(),
        "new_root": n.hex(),
        "proof": [h.hex() for h in p],
        "expected_error": consistency_error(old, new, o, n, p),
    }


def _pick_indices(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


def inclusion_cases() -> list[Case]:
    """All inclusion vectors: valid ones, then one-mutation negatives."""
    cases: list[Case] = []
    for n in [*SMALL_SIZES, *LARGE_SIZES]:
        d = leaves(n)
        root = ref.mth(d)
        for i in range(n) if n in SMALL_SIZES else _pick_indices(n):
            cases.append(_inclusion(f"valid: leaf {i} of {n}", d[i], i, n, ref.path(i, d), root))
    for n in NEGATIVE_SIZES:
        d = leaves(n)
        root = ref.mth(d)
        for i in _pick_indices(n):
            cases.extend(c for c in _inclusion_negatives(d, i, root) if _kept(c))
    return cases


def _inclusion_negatives(d: list[bytes], i: int, root: bytes) -> Iterator[Case]:
    n, p = len(d), ref.path(i, d)
    tag = f"leaf {i} of {n}"
    yield _inclusion(f"flipped bit in root: {tag}", d[i], i, n, p, flip(root, 7 * i + 3))
    yield _inclusion(f"wrong leaf data: {tag}", d[i] + b"x", i, n, p, root)
    yield _inclusion(f"index {n} >= size: {tag}", d[i], n, n, p, root)
    yield _inclusion(f"negative index: {tag}", d[i], -1, n, p, root)
    yield _inclusion(f"size 0: {tag}", d[i], i, 0, p, root)
    yield _inclusion(f"root one byte short: {tag}", d[i], i, n, p, root[:-1])
    yield _inclusion(f"trailing extra node: {tag}", d[i], i, n, [*p, root], root)
    if i + 1 < n:
        yield _inclusion(f"index off by +1: {tag}", d[i], i + 1, n, p, root)
    if i > 0:
        yield _inclusion(f"index off by -1: {tag}", d[i], i - 1, n, p, root)
    for m in sorted({n - 1, n + 1, 2 * n}):
        if m > i:
            yield _inclusion(f"wrong size {m}: {tag}", d[i], i, m, p, root)
    if p:
        j = (i * 5) % len(p)
        bad = [*p[:j], flip(p[j], 11 * i), *p[j + 1 :]]
        yield _inclusion(f"flipped bit in proof node {j}: {tag}", d[i], i, n, bad, root)
        yield _inclusion(f"proof too short: {tag}", d[i], i, n, p[:-1], root)
        yield _inclusion(
            f"proof node {j} one byte short: {tag}",
            d[i],
            i,
            n,
            [*p[:j], p[j][:-1], *p[j + 1 :]],
            root,
        )
        yield _inclusion(
            f"proof node {j} one byte long: {tag}",
            d[i],
            i,
            n,
            [*p[:j], p[j] + b"\0", *p[j + 1 :]],
            root,
        )
        if len(p) > 1:
            yield _inclusion(f"proof reversed: {tag}", d[i], i, n, p[::-1], root)


def consistency_cases() -> list[Case]:
    """All consistency vectors: valid ones, then one-mutation negatives."""
    cases: list[Case] = []
    pairs = [(m, n) for n in SMALL_SIZES for m in range(1, n + 1)]
    pairs += [(m, n) for n in LARGE_SIZES for m in sorted({1, n // 3, n // 2, n - 1, n})]
    for m, n in pairs:
        d = leaves(n)
        p = ref.proof(m, d)
        cases.append(_consistency(f"valid: {m} -> {n}", m, n, ref.mth(d[:m]), ref.mth(d), p))
    for n in NEGATIVE_SIZES:
        for m in sorted({1, n // 2 or 1, max(n - 1, 1), n}):
            cases.extend(c for c in _consistency_negatives(leaves(n), m) if _kept(c))
    return cases


def _consistency_negatives(d: list[bytes], m: int) -> Iterator[Case]:
    n, p = len(d), ref.proof(m, d)
    o, r = ref.mth(d[:m]), ref.mth(d)
    tag = f"{m} -> {n}"
    yield _consistency(f"flipped bit in old root: {tag}", m, n, flip(o, 5 * m), r, p)
    yield _consistency(f"flipped bit in new root: {tag}", m, n, o, flip(r, 3 * n + 1), p)
    yield _consistency(f"old size 0: {tag}", 0, n, o, r, p)
    yield _consistency(f"old size > new size: {tag}", n + 1, n, o, r, p)
    yield _consistency(f"trailing extra node: {tag}", m, n, o, r, [*p, r])
    yield _consistency(f"new root one byte short: {tag}", m, n, o, r[:-1], p)
    yield _consistency(f"old root one byte long: {tag}", m, n, o + b"\0", r, p)
    if m != n:
        yield _consistency(f"swapped old/new roots: {tag}", m, n, r, o, p)
        yield _consistency(f"wrong new size {n + 1}: {tag}", m, n + 1, o, r, p)
        yield _consistency(f"wrong old size {m + 1}: {tag}", m + 1, n, o, r, p)
        j = (m * 7) % len(p)
        bad = [*p[:j], flip(p[j], 13 * m + n), *p[j + 1 :]]
        yield _consistency(f"flipped bit in proof node {j}: {tag}", m, n, o, r, bad)
        yield _consistency(f"proof too short: {tag}", m, n, o, r, p[:-1])
        yield _consistency(
            f"proof node {j} one byte short: {tag}", m, n, o, r, [*p[:j], p[j][:-1], *p[j + 1 :]]
        )
        if m > 1:
            yield _consistency(f"wrong old size {m - 1}: {tag}", m - 1, n, o, r, p)


def _kept(case: Case) -> bool:
    """Drop a wrong-size mutation that the proof's shape cannot reveal.

    An inclusion path fixes the tree size only through its shape: leaf 0 of 3 has the same path
    (and the same computed root) when claimed to sit in a tree of 4. Such a claim is accepted by
    RFC 9162 verification, so it is no negative case.
    """
    return case["expected_error"] is not None or not case["description"].startswith("wrong")


def render(cases: list[Case]) -> str:
    """The canonical text of a vector file; refuses a negative case that would pass."""
    for case in cases:
        valid = case["description"].startswith("valid:")
        if valid != (case["expected_error"] is None):
            raise AssertionError(f"mutation did not change the outcome: {case}")
    if len({case["description"] for case in cases}) != len(cases):
        raise AssertionError("duplicate case descriptions")
    lines = [json.dumps(case, sort_keys=True) for case in cases]
    return "[\n" + ",\n".join(lines) + "\n]\n"


GENERATORS: dict[Path, Callable[[], list[Case]]] = {
    INCLUSION_FILE: inclusion_cases,
    CONSISTENCY_FILE: consistency_cases,
}


def main() -> None:
    """Write both vector files."""
    for path, generate in GENERATORS.items():
        path.write_text(render(generate()), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

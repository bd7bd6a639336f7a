"""Tests of ledger.merkle: vectors, known answers, and properties against the naive reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger import merkle_reference as ref
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    InvalidHashLengthError,
    InvalidIndexError,
    InvalidProofLengthError,
    InvalidSizeError,
    MerkleError,
    RootMismatchError,
)
from tests.vectors import generate_merkle as gen

ERRORS: dict[str, type[MerkleError]] = {
    cls.__name__: cls
    for cls in (
        InvalidIndexError,
        InvalidSizeError,
        InvalidProofLengthError,
        InvalidHashLengthError,
        RootMismatchError,
    )
}


def _load(path: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
    return cases


INCLUSION = _load(gen.INCLUSION_FILE)
CONSISTENCY = _load(gen.CONSISTENCY_FILE)


def _outcome(check: Callable[[], None]) -> str | None:
    """The name of the exact error class ``check`` raises, or None if it passes."""
    try:
        check()
    except MerkleError as exc:
        return type(exc).__name__
    return None


def _unhex(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# --- vectors -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", INCLUSION, ids=[c["description"] for c in INCLUSION])
def test_inclusion_vector(case: dict[str, Any]) -> None:
    data = bytes.fromhex(case["leaf_data"])
    index, size, root = case["leaf_index"], case["tree_size"], bytes.fromhex(case["root"])
    proof = _unhex(case["proof"])
    expected = case["expected_error"]
    assert expected is None or expected in ERRORS
    got = _outcome(lambda: merkle.verify_inclusion(data, index, size, proof, root))
    assert got == expected
    got_hash = _outcome(
        lambda: merkle.verify_inclusion_hash(merkle.leaf_hash(data), index, size, proof, root)
    )
    assert got_hash == expected
    if expected is None and case["description"].startswith("valid:"):
        leaves = gen.leaves(size)
        assert leaves[index] == data
        assert merkle.root(leaves) == root
        assert merkle.inclusion_proof(leaves, index) == proof


@pytest.mark.parametrize("case", CONSISTENCY, ids=[c["description"] for c in CONSISTENCY])
def test_consistency_vector(case: dict[str, Any]) -> None:
    old, new = case["old_size"], case["new_size"]
    old_root, new_root = bytes.fromhex(case["old_root"]), bytes.fromhex(case["new_root"])
    proof = _unhex(case["proof"])
    expected = case["expected_error"]
    assert expected is None or expected in ERRORS
    got = _outcome(lambda: merkle.verify_consistency(old, new, old_root, new_root, proof))
    assert got == expected
    if expected is None:
        leaves = gen.leaves(new)
        assert merkle.root(leaves[:old]) == old_root
        assert merkle.root(leaves) == new_root
        assert merkle.consistency_proof(leaves, old) == proof


def test_vector_files_match_generator() -> None:
    for path, generate in gen.GENERATORS.items():
        assert path.read_text(encoding="utf-8") == gen.render(generate()), (
            f"{path.name} is stale: run python -m tests.vectors.generate_merkle"
        )


def test_vectors_cover_every_error_class() -> None:
    seen = {c["expected_error"] for c in INCLUSION + CONSISTENCY}
    assert seen == {None, *ERRORS}


# --- known answers (RFC 6962 / certificate-transparency test data) -------------------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_known_empty_root() -> None:
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert EMPTY_ROOT.hex() == empty
    assert merkle.root([]).hex() == empty
    assert merkle.root_from_hashes([]).hex() == empty
    assert ref.mth([]).hex() == empty


def test_known_roots_of_ct_test_data() -> None:
    for size, expected in enumerate(CT_ROOTS, start=1):
        assert merkle.root(CT_LEAVES[:size]).hex() == expected
        assert ref.mth(CT_LEAVES[:size]).hex() == expected
    assert merkle.root(CT_LEAVES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


def test_known_inclusion_path_of_leaf_0_of_8() -> None:
    proof = merkle.inclusion_proof(CT_LEAVES, 0)
    assert [p.hex() for p in proof] == [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ]
    merkle.verify_inclusion(CT_LEAVES[0], 0, 8, proof, bytes.fromhex(CT_ROOTS[7]))


def test_hash_primitives() -> None:
    assert merkle.leaf_hash(b"") == ref.leaf(b"")
    assert merkle.leaf_hash(b"").hex() == CT_ROOTS[0]
    left, right = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.node_hash(left, right) == ref.node(left, right)
    assert merkle.node_hash(left, right) != merkle.node_hash(right, left)
    assert len(merkle.leaf_hash(b"x")) == HASH_SIZE == 32


# --- errors and preconditions ---------------------------------------------------------------


def test_error_hierarchy() -> None:
    assert issubclass(MerkleError, ValueError)
    for cls in ERRORS.values():
        assert issubclass(cls, MerkleError)
        assert cls is not MerkleError
    assert "index 5" in repr(InvalidIndexError("index 5"))


def test_proof_builders_reject_bad_arguments() -> None:
    leaves = gen.leaves(4)
    for index in (-1, 4):
        with pytest.raises(InvalidIndexError):
            merkle.inclusion_proof(leaves, index)
    with pytest.raises(InvalidIndexError):
        merkle.inclusion_proof([], 0)
    for old in (0, -1, 5):
        with pytest.raises(InvalidSizeError):
            merkle.consistency_proof(leaves, old)
    with pytest.raises(InvalidHashLengthError):
        merkle.root_from_hashes([merkle.leaf_hash(b"a"), b"short"])


def test_equal_sizes_need_empty_proof_and_equal_roots() -> None:
    r = merkle.root(gen.leaves(5))
    merkle.verify_consistency(5, 5, r, r, [])
    with pytest.raises(InvalidProofLengthError):
        merkle.verify_consistency(5, 5, r, r, [r])
    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(5, 5, r, gen.flip(r), [])


def test_preconditions_are_checked_before_any_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    leaves = gen.leaves(6)
    r, proof = merkle.root(leaves), merkle.inclusion_proof(leaves, 2)
    cproof = merkle.consistency_proof(leaves, 3)
    r3 = merkle.root(leaves[:3])

    def no_hashing(data: bytes = b"") -> Any:
        raise AssertionError("hashed before checking preconditions")

    monkeypatch.setattr(merkle, "_sha256", no_hashing)
    bad_inclusion: list[tuple[type[MerkleError], Callable[[], None]]] = [
        (InvalidSizeError, lambda: merkle.verify_inclusion(b"x", 0, 0, [], r)),
        (InvalidIndexError, lambda: merkle.verify_inclusion(b"x", 6, 6, proof, r)),
        (InvalidProofLengthError, lambda: merkle.verify_inclusion(b"x", 2, 6, [*proof, r], r)),
        (InvalidHashLengthError, lambda: merkle.verify_inclusion(b"x", 2, 6, proof, r[:-1])),
        (InvalidHashLengthError, lambda: merkle.verify_inclusion_hash(b"h", 2, 6, proof, r)),
        (InvalidSizeError, lambda: merkle.verify_consistency(0, 6, r3, r, cproof)),
        (InvalidSizeError, lambda: merkle.verify_consistency(7, 6, r3, r, cproof)),
        (InvalidProofLengthError, lambda: merkle.verify_consistency(3, 6, r3, r, cproof[:-1])),
        (InvalidHashLengthError, lambda: merkle.verify_consistency(3, 6, r3, r + b"\0", cproof)),
    ]
    for cls, check in bad_inclusion:
        with pytest.raises(cls):
            check()


# --- properties against the reference -------------------------------------------------------

LEAF_LISTS = st.lists(st.binary(max_size=12), max_size=200)
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


@PROPERTY_SETTINGS
@given(LEAF_LISTS)
def test_root_matches_reference(leaves: list[bytes]) -> None:
    expected = ref.mth(leaves)
    assert merkle.root(leaves) == expected
    assert merkle.root_from_hashes([merkle.leaf_hash(d) for d in leaves]) == expected


@PROPERTY_SETTINGS
@given(st.data(), LEAF_LISTS.filter(bool))
def test_inclusion_proofs_match_reference_and_verify(
    data: st.DataObject, leaves: list[bytes]
) -> None:
    size, r = len(leaves), ref.mth(leaves)
    for index in {0, size - 1, data.draw(st.integers(0, size - 1), label="index")}:
        proof = merkle.inclusion_proof(leaves, index)
        assert proof == ref.path(index, leaves)
        assert ref.root_from_path(ref.leaf(leaves[index]), index, size, proof) == r
        merkle.verify_inclusion(leaves[index], index, size, proof, r)
        merkle.verify_inclusion_hash(merkle.leaf_hash(leaves[index]), index, size, proof, r)


@PROPERTY_SETTINGS
@given(st.data(), LEAF_LISTS.filter(bool))
def test_consistency_proofs_match_reference_and_verify(
    data: st.DataObject, leaves: list[bytes]
) -> None:
    new = len(leaves)
    old = data.draw(st.integers(1, new), label="old_size")
    old_root, new_root = ref.mth(leaves[:old]), ref.mth(leaves)
    proof = merkle.consistency_proof(leaves, old)
    assert proof == ref.proof(old, leaves)
    assert ref.roots_from_proof(old_root, old, new, proof) == (old_root, new_root)
    merkle.verify_consistency(old, new, old_root, new_root, proof)


def _flip_somewhere(data: st.DataObject, blobs: list[bytes]) -> list[bytes]:
    """``blobs`` with exactly one bit flipped, anywhere in any of them."""
    total_bits = sum(len(b) for b in blobs) * 8
    bit = data.draw(st.integers(0, total_bits - 1), label="bit")
    out = []
    for blob in blobs:
        out.append(gen.flip(blob, bit) if 0 <= bit < len(blob) * 8 else blob)
        bit -= len(blob) * 8
    return out


@PROPERTY_SETTINGS
@given(st.data(), LEAF_LISTS.filter(bool))
def test_flipped_bit_in_inclusion_proof_or_root_is_rejected(
    data: st.DataObject, leaves: list[bytes]
) -> None:
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = merkle.inclusion_proof(leaves, index)
    *bad_proof, bad_root = _flip_somewhere(data, [*proof, merkle.root(leaves)])
    with pytest.raises(MerkleError):
        merkle.verify_inclusion(leaves[index], index, size, bad_proof, bad_root)


@PROPERTY_SETTINGS
@given(st.data(), LEAF_LISTS.filter(bool))
def test_flipped_bit_in_consistency_proof_or_roots_is_rejected(
    data: st.DataObject, leaves: list[bytes]
) -> None:
    new = len(leaves)
    old = data.draw(st.integers(1, new), label="old_size")
    proof = merkle.consistency_proof(leaves, old)
    blobs = [*proof, merkle.root(leaves[:old]), merkle.root(leaves)]
    *bad_proof, bad_old, bad_new = _flip_somewhere(data, blobs)
    with pytest.raises(MerkleError):
        merkle.verify_consistency(old, new, bad_old, bad_new, bad_proof)

"""Every Ed25519 verification path gives the ZIP-215 answer (decisions D34).

The paths: the pure reference (:mod:`ledger.ed25519_zip215`, the oracle), the fallback of
:mod:`ledger.signatures` (OpenSSL's yes, else the reference), the compiled extension
``pantheon_native`` (skipped where it is not built; ``./dev`` builds it wherever cargo exists,
CI included), each one signature at a time and in batches, and :mod:`ledger.keys` (whichever
backend this process uses). They are fed the published edge cases, every combination of
small-order points, and random valid, corrupted and torsion-carrying signatures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import ed25519_zip215 as ref
from ledger import keys, signatures
from ledger.context import is_public_key
from ledger.keys import KeyPair

Item = tuple[bytes, bytes, bytes]
Path_ = Callable[[Sequence[Item]], list[bool]]

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "ed25519_speccheck.json"

# The ZIP-215 answers of the 12 "Taming the many EdDSAs" cases, by index (the Zebra row of
# the speccheck README):
#   0-3  small or mixed-order A and R, valid under both equations      -> accepted
#   4    valid under the cofactored equation only                      -> accepted
#   5    fails only if 8k is reduced mod L before multiplying          -> accepted
#   6, 7 S >= L (non-canonical S)                                      -> rejected
#   8    non-canonical R, valid only if the hash took R reduced        -> rejected
#   9    non-canonical R, the hash over R's bytes as given             -> accepted
#   10, 11 non-canonical (small-order) A                               -> accepted
EXPECTED = [True, True, True, True, True, True, False, False, False, True, True, True]


def _singles(verify: Callable[[bytes, bytes, bytes], bool]) -> Path_:
    return lambda items: [verify(*item) for item in items]


def _keys_single(items: Sequence[Item]) -> list[bool]:
    return [keys.verify(pk, sig, b"", msg) for pk, sig, msg in items]


def _keys_batch(items: Sequence[Item]) -> list[bool]:
    return keys.verify_batch(items, domain=b"")


PATHS: dict[str, Path_] = {
    "reference": _singles(ref.verify),
    "fallback": _singles(signatures.fallback_verify),
    "fallback-batch": signatures.fallback_verify_batch,
    "native": _singles(signatures.native_verify),
    "native-batch": signatures.native_verify_batch,
    "keys": _keys_single,
    "keys-batch": _keys_batch,
}
NEEDS_NATIVE = {"native", "native-batch"}


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest) -> Path_:
    if request.param in NEEDS_NATIVE and not signatures.native_available():
        pytest.skip("pantheon_native is not built here (./dev builds it where cargo exists)")
    return PATHS[request.param]


def available_paths() -> dict[str, Path_]:
    return {
        name: run
        for name, run in PATHS.items()
        if name not in NEEDS_NATIVE or signatures.native_available()
    }


def speccheck() -> list[Item]:
    cases = json.loads(VECTORS.read_text())["cases"]
    assert [c["index"] for c in cases] == list(range(12))
    return [
        (bytes.fromhex(c["pub_key"]), bytes.fromhex(c["signature"]), bytes.fromhex(c["message"]))
        for c in cases
    ]


def test_speccheck_vectors_get_the_zip215_answers(path: Path_) -> None:
    assert path(speccheck()) == EXPECTED


def test_speccheck_vectors_one_by_one_and_among_valid_ones(path: Path_) -> None:
    good = KeyPair.from_seed(bytes(range(32)))
    filler = [(good.public_key, good.sign(b"", bytes([i])), bytes([i])) for i in range(3)]
    for case, expected in zip(speccheck(), EXPECTED, strict=True):
        assert path([case]) == [expected]
        assert path([*filler, case, *filler]) == [True] * 3 + [expected] + [True] * 3


def test_openssl_alone_disagrees_on_the_vectors() -> None:
    """The reason for the fallback's second opinion: OpenSSL rejects cases 4, 5, 9 and 10."""
    openssl = [signatures._openssl_accepts(*case) for case in speccheck()]
    assert [i for i, (o, z) in enumerate(zip(openssl, EXPECTED, strict=True)) if o != z] == [
        4,
        5,
        9,
        10,
    ]
    assert all(z for o, z in zip(openssl, EXPECTED, strict=True) if o)  # OpenSSL yes => ZIP-215


def small_order_encodings() -> list[bytes]:
    """Every 32-byte encoding of a small-order point: the 8 points' canonical encodings, and
    the non-canonical ones (y + p < 2^255, or x = 0 with the sign bit set)."""
    order_8 = bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
    y8 = int.from_bytes(order_8, "little")
    ys = [0, 1, ref.P - 1, y8, ref.P - y8]
    out = []
    for y in ys:
        for value in (y, y + ref.P):
            for sign in (0, 1):
                if value < 2**255:
                    out.append((value | sign << 255).to_bytes(32, "little"))
    return [e for e in out if ref.decode_point(e) is not None]


def test_the_small_order_encodings() -> None:
    encodings = small_order_encodings()
    points = [ref.decode_point(e) for e in encodings]
    assert all(p is not None and ref.is_identity(ref.scalar_mult(8, p)) for p in points)
    canonical = {ref.encode_point(p) for p in points if p is not None}
    assert len(encodings) == 14 and len(canonical) == 8  # 8 points, 6 non-canonical encodings
    orders = sorted(
        next(n for n in (1, 2, 4, 8) if ref.is_identity(ref.scalar_mult(n, p)))
        for p in points
        if p is not None and ref.encode_point(p) in canonical
    )
    assert sorted(set(orders)) == [1, 2, 4, 8]


def test_small_order_a_and_r_in_every_encoding(path: Path_) -> None:
    """With A and R of small order the equation is [8][S]B = 0: valid iff S = 0, whatever
    the message and whichever encodings (canonical or not) A and R have."""
    encodings = small_order_encodings()
    message = b"small order"
    items = [
        (a, r + s.to_bytes(32, "little"), message)
        for a in encodings
        for r in encodings
        for s in (0, 1)
    ]
    expected = [s == 0 for a in encodings for r in encodings for s in (0, 1)]
    assert path(items) == expected


# -- random valid, corrupted and torsion-carrying signatures ------------------------------------

SMALL_ORDER = small_order_encodings()


def torsion_signature(seed: bytes, message: bytes, r_torsion: bytes, a_torsion: bytes) -> Item:
    """An RFC 8032 signature whose R and public key carry the small-order components given:
    valid under ZIP-215's cofactored equation, and under OpenSSL's only without torsion."""
    digest = hashlib.sha512(seed).digest()
    a = int.from_bytes(digest[:32], "little")
    a = (a & ~7 & ((1 << 254) - 1)) | (1 << 254)
    tr, ta = ref.decode_point(r_torsion), ref.decode_point(a_torsion)
    assert tr is not None and ta is not None
    public = ref.encode_point(ref._add(ref.scalar_mult(a, ref.BASE), ta))
    nonce = int.from_bytes(hashlib.sha512(digest[32:] + message).digest(), "little") % ref.L
    r = ref.encode_point(ref._add(ref.scalar_mult(nonce, ref.BASE), tr))
    k = int.from_bytes(hashlib.sha512(r + public + message).digest(), "little") % ref.L
    s = (nonce + k * a) % ref.L
    return public, r + s.to_bytes(32, "little"), message


def corrupt(item: Item, how: str, where: int) -> Item:
    public, signature, message = item
    if how == "none":
        return item
    if how == "message":
        return public, signature, message + b"!" if not message else _flip(message, where)
    if how == "signature":
        return public, _flip(signature, where), message
    if how == "public_key":
        return _flip(public, where), signature, message
    if how == "s_plus_l":  # the same S, non-canonical
        s = int.from_bytes(signature[32:], "little") + ref.L
        return public, signature[:32] + s.to_bytes(32, "little"), message
    if how == "small_order_r":
        return public, SMALL_ORDER[where % len(SMALL_ORDER)] + signature[32:], message
    if how == "truncated":
        return public, signature[: where % 64], message
    raise AssertionError(how)


def _flip(data: bytes, where: int) -> bytes:
    bit = where % (8 * len(data))
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


CORRUPTIONS = [
    "none",
    "message",
    "signature",
    "public_key",
    "s_plus_l",
    "small_order_r",
    "truncated",
]


@st.composite
def signed_items(draw: st.DrawFn) -> tuple[Item, bool | None]:
    """A signature and, where it is certain, its ZIP-215 answer."""
    seed = draw(st.binary(min_size=32, max_size=32))
    message = draw(st.binary(max_size=48))
    how = draw(st.sampled_from(CORRUPTIONS))
    where = draw(st.integers(min_value=0, max_value=511))
    if draw(st.booleans()):
        pair = KeyPair.from_seed(seed)
        item = (pair.public_key, pair.sign(b"", message), message)
    else:
        r_torsion = draw(st.sampled_from(SMALL_ORDER))
        a_torsion = draw(st.sampled_from(SMALL_ORDER))
        item = torsion_signature(seed, message, r_torsion, a_torsion)
    expected: bool | None = {"none": True, "s_plus_l": False, "truncated": False}.get(how)
    return corrupt(item, how, where), expected


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(signed_items(), min_size=1, max_size=5))
def test_every_path_agrees_on_random_signatures(cases: list[tuple[Item, bool | None]]) -> None:
    items = [item for item, _ in cases]
    oracle = PATHS["reference"](items)
    for (_, expected), answer in zip(cases, oracle, strict=True):
        assert expected is None or answer == expected
    for name, run in available_paths().items():
        assert run(items) == oracle, name


def test_torsion_signatures_are_valid_and_openssl_rejects_them() -> None:
    """The helper above makes what it says: cofactored-valid signatures OpenSSL refuses."""
    order_4 = bytes(32)  # y = 0: a point of order 4
    identity = (1).to_bytes(32, "little")
    item = torsion_signature(b"s" * 32, b"m", order_4, identity)
    assert ref.verify(*item) and not signatures._openssl_accepts(*item)
    plain = torsion_signature(b"s" * 32, b"m", identity, identity)
    pair = KeyPair.from_seed(b"s" * 32)
    assert plain == (pair.public_key, pair.sign(b"", b"m"), b"m")
    for name, run in available_paths().items():
        assert run([item, plain]) == [True, True], name


def test_registration_refuses_small_order_and_non_canonical_keys() -> None:
    """Keys that verify forged signatures (small order) or have a second encoding are not
    registrable, while real keys and a mixed-order key's prime part are."""
    for encoded in small_order_encodings():
        assert not ref.is_strong_public_key(encoded), encoded.hex()
        assert not is_public_key(encoded)
    real = KeyPair.from_seed(bytes(range(32))).public_key
    assert ref.is_strong_public_key(real)
    assert is_public_key(real)
    point = ref.decode_point(real)
    assert point is not None
    torsion = ref.decode_point(small_order_encodings()[1])
    assert torsion is not None
    mixed = ref.encode_point(ref._add(point, torsion))
    assert ref.is_strong_public_key(mixed)  # mixed order: not forgeable for every message
    assert not is_public_key(real[:31])
    flipped = bytearray(real)
    flipped[0] ^= 1
    assert ref.is_strong_public_key(bytes(flipped)) == (
        ref.decode_point(bytes(flipped)) is not None
    )

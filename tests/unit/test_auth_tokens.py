"""JWT issue and verification, and every attack the verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.auth.tokens import (
    Access,
    BadSignature,
    Claims,
    ExpiredToken,
    KeyRing,
    MalformedToken,
    NotYetValidToken,
    RevokedToken,
    SigningKey,
    Token,
    TokenIssuer,
    TokenVerifier,
    UnknownKid,
    WrongAlgorithm,
    WrongAudience,
    WrongIssuer,
    keys_from_jwks,
)

ISS = "pantheon:iam:acme"
AUD = "pantheon:gateway"
NOW = 1_800_000_000


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(SigningKey.generate(NOW))


def _issue(ring: KeyRing, clock: Clock, **kw: Any) -> Token:
    issuer = TokenIssuer(ring, issuer=ISS, audience=AUD, ttl_s=600, clock=clock)
    return issuer.issue(sub="u-1", inst="acme", groups=["ops"], perms=["chain:read"], **kw)


def _verifier(ring: KeyRing, clock: Clock, **kw: Any) -> TokenVerifier:
    return TokenVerifier(ring, issuer=ISS, audience=AUD, clock=clock, **kw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    h = _b64(json.dumps(header).encode())
    p = _b64(json.dumps(payload).encode())
    return f"{h}.{p}.{_b64(signature)}"


def _payload(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def test_issued_token_has_the_claims_and_verifies(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock)
    header = jwt.get_unverified_header(token.value)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": ring.current.kid}
    payload = _payload(token.value)
    assert set(payload) == {
        "iss",
        "aud",
        "sub",
        "inst",
        "groups",
        "perms",
        "iat",
        "nbf",
        "exp",
        "jti",
    }
    assert payload["exp"] - payload["iat"] == 600
    claims = _verifier(ring, clock).verify(token.value)
    assert claims == token.claims
    assert claims.sub == "u-1" and claims.inst == "acme" and claims.groups == ("ops",)
    assert claims.has("chain:read") and not claims.has("admin")


def test_jwks_verifier_accepts_tokens(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock)
    verifier = TokenVerifier.from_jwks(ring.jwks(), issuer=ISS, audience=AUD, clock=clock)
    assert verifier.verify(token.value).jti == token.claims.jti
    (entry,) = ring.jwks()["keys"]
    assert entry["kty"] == "OKP" and entry["crv"] == "Ed25519" and entry["kid"] == ring.current.kid
    assert "d" not in entry


def test_alg_none_is_refused(ring: KeyRing, clock: Clock) -> None:
    payload = _payload(_issue(ring, clock).value)
    forged = _forge({"alg": "none", "typ": "JWT", "kid": ring.current.kid}, payload)
    with pytest.raises(WrongAlgorithm) as err:
        _verifier(ring, clock).verify(forged)
    assert err.value.reason == "wrong_alg"


def test_hs256_with_the_public_key_as_secret_is_refused(ring: KeyRing, clock: Clock) -> None:
    payload = _payload(_issue(ring, clock).value)
    public_pem = ring.current.public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    raw = ring.current.public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    verifier = _verifier(ring, clock)
    for secret in (public_pem, raw):
        header = {"alg": "HS256", "typ": "JWT", "kid": ring.current.kid}
        h = _b64(json.dumps(header).encode())
        p = _b64(json.dumps(payload).encode())
        sig = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
        with pytest.raises(WrongAlgorithm):
            verifier.verify(f"{h}.{p}.{_b64(sig)}")


@pytest.mark.parametrize("alg", ["RS256", "ES256", "PS256"])
def test_other_asymmetric_algorithms_are_refused(ring: KeyRing, clock: Clock, alg: str) -> None:
    payload = _payload(_issue(ring, clock).value)
    key: Any = (
        ec.generate_private_key(ec.SECP256R1())
        if alg == "ES256"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    forged = jwt.encode(payload, key, algorithm=alg, headers={"kid": ring.current.kid})
    with pytest.raises(WrongAlgorithm):
        _verifier(ring, clock).verify(forged)


def test_wrong_issuer_and_audience(ring: KeyRing, clock: Clock) -> None:
    other_iss = TokenIssuer(ring, issuer="pantheon:iam:globex", audience=AUD, clock=clock)
    other_aud = TokenIssuer(ring, issuer=ISS, audience="someone-else", clock=clock)
    args: dict[str, Any] = {"sub": "u", "inst": "acme", "groups": [], "perms": []}
    with pytest.raises(WrongIssuer) as e1:
        _verifier(ring, clock).verify(other_iss.issue(**args).value)
    with pytest.raises(WrongAudience) as e2:
        _verifier(ring, clock).verify(other_aud.issue(**args).value)
    assert (e1.value.reason, e2.value.reason) == ("wrong_issuer", "wrong_audience")


def test_expired_and_not_yet_valid(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock)
    verifier = _verifier(ring, clock)
    clock.now = NOW + 600
    with pytest.raises(ExpiredToken) as e1:
        verifier.verify(token.value)
    clock.now = NOW - 5
    with pytest.raises(NotYetValidToken) as e2:
        verifier.verify(token.value)
    clock.now = NOW + 599
    assert verifier.verify(token.value).sub == "u-1"
    assert (e1.value.reason, e2.value.reason) == ("expired", "not_yet_valid")


def test_leeway_tolerates_small_clock_skew(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock)
    clock.now = NOW - 5
    assert _verifier(ring, clock, leeway_s=10).verify(token.value).sub == "u-1"


def test_unknown_kid_and_missing_kid(ring: KeyRing, clock: Clock) -> None:
    other = KeyRing(SigningKey.generate(NOW))
    with pytest.raises(UnknownKid) as err:
        _verifier(ring, clock).verify(_issue(other, clock).value)
    assert err.value.reason == "unknown_kid"
    payload = _payload(_issue(ring, clock).value)
    no_kid = jwt.encode(payload, ring.current.private, algorithm="EdDSA")
    with pytest.raises(UnknownKid):
        _verifier(ring, clock).verify(no_kid)


def test_key_of_another_ring_under_a_known_kid_is_a_bad_signature(
    ring: KeyRing, clock: Clock
) -> None:
    payload = _payload(_issue(ring, clock).value)
    attacker = SigningKey.generate(NOW)
    forged = jwt.encode(
        payload, attacker.private, algorithm="EdDSA", headers={"kid": ring.current.kid}
    )
    with pytest.raises(BadSignature):
        _verifier(ring, clock).verify(forged)


def test_tampered_payload_is_refused(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock).value
    h, _p, s = token.split(".")
    payload = _payload(token)
    payload["perms"] = ["admin", "chain:read", "chain:write"]
    tampered = f"{h}.{_b64(json.dumps(payload).encode())}.{s}"
    with pytest.raises(BadSignature) as err:
        _verifier(ring, clock).verify(tampered)
    assert err.value.reason == "bad_signature"


def test_tampered_signature_is_refused(ring: KeyRing, clock: Clock) -> None:
    token = _issue(ring, clock).value
    h, p, s = token.split(".")
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[0] ^= 1
    with pytest.raises(BadSignature):
        _verifier(ring, clock).verify(f"{h}.{p}.{_b64(bytes(sig))}")


@pytest.mark.parametrize(
    "token",
    # the last: a lone surrogate (a JSON string can carry one; found by the atheris driver)
    ["", "abc", "a.b", "a.b.c.d", "x" * 10_000, "eyJhbGciOiJFZERTQSJ9.!!!.???", "a.b.\udc80"],
)
def test_garbage_is_malformed(ring: KeyRing, clock: Clock, token: str) -> None:
    with pytest.raises(MalformedToken):
        _verifier(ring, clock).verify(token)


@pytest.mark.parametrize("suffix", ["=", "==", " ", "\n", ".", "%3D"])
def test_a_genuine_token_with_anything_appended_is_refused(
    ring: KeyRing, clock: Clock, suffix: str
) -> None:
    """Padding on the signature decoded to the same bytes, so ``token + "=="`` was accepted
    as the token itself; only the exact compact form is."""
    token = _issue(ring, clock).value
    verifier = _verifier(ring, clock)
    assert verifier.verify(token).sub
    with pytest.raises(MalformedToken):
        verifier.verify(token + suffix)
    head, payload, signature = token.split(".")
    with pytest.raises(MalformedToken):
        verifier.verify(f"{head}.{payload}==.{signature}")


def test_missing_or_mistyped_claims_are_malformed(ring: KeyRing, clock: Clock) -> None:
    base = _payload(_issue(ring, clock).value)
    verifier = _verifier(ring, clock)
    for change in ({"perms": "admin"}, {"groups": [1]}, {"exp": "never"}, {"sub": 5}):
        forged = jwt.encode(
            {**base, **change},
            ring.current.private,
            algorithm="EdDSA",
            headers={"kid": ring.current.kid},
        )
        with pytest.raises(MalformedToken):
            verifier.verify(forged)
    without = {k: v for k, v in base.items() if k != "jti"}
    forged = jwt.encode(
        without, ring.current.private, algorithm="EdDSA", headers={"kid": ring.current.kid}
    )
    with pytest.raises(MalformedToken):
        verifier.verify(forged)


def test_revoked_jti_and_revoked_all_for_user(ring: KeyRing, clock: Clock) -> None:
    first = _issue(ring, clock)
    clock.now += 10
    second = _issue(ring, clock)
    revoked_jtis = {first.claims.jti}
    not_before = {"u-1": 0}

    def is_revoked(claims: Claims) -> bool:
        return claims.jti in revoked_jtis or claims.iat < not_before[claims.sub]

    verifier = _verifier(ring, clock, is_revoked=is_revoked)
    with pytest.raises(RevokedToken) as err:
        verifier.verify(first.value)
    assert err.value.reason == "revoked"
    assert verifier.verify(second.value).jti == second.claims.jti
    not_before["u-1"] = int(clock.now) + 1  # revoke every token issued so far
    with pytest.raises(RevokedToken):
        verifier.verify(second.value)


def test_current_access_narrows_a_token_to_what_its_principal_has_now(
    ring: KeyRing, clock: Clock
) -> None:
    issuer = TokenIssuer(ring, issuer=ISS, audience=AUD, ttl_s=600, clock=clock)
    token = issuer.issue(
        sub="u-1", inst="acme", groups=["ops", "readers"], perms=["data:write", "data:read"]
    ).value
    now: dict[str, Access | None] = {
        "u-1": Access(
            groups=frozenset({"ops", "readers"}), perms=frozenset({"data:write", "data:read"})
        )
    }
    verifier = _verifier(ring, clock, current_access=lambda c: now[c.sub])
    claims = verifier.verify(token)
    assert claims.perms == {"data:write", "data:read"} and claims.groups == ("ops", "readers")
    # data:write revoked, readers left: the same token loses both at once
    now["u-1"] = Access(groups=frozenset({"ops"}), perms=frozenset({"data:read"}))
    claims = verifier.verify(token)
    assert claims.perms == {"data:read"} and claims.groups == ("ops",)
    assert not claims.has("data:write")
    # granted after the login: not in the token, so not gained without a new login
    now["u-1"] = Access(groups=frozenset({"ops", "admins"}), perms=frozenset({"admin"}))
    claims = verifier.verify(token)
    assert claims.perms == frozenset() and claims.groups == ("ops",)
    now["u-1"] = None  # disabled, forgotten or revoked
    with pytest.raises(RevokedToken):
        verifier.verify(token)


def test_rotation_keeps_old_tokens_valid_until_they_expire(ring: KeyRing, clock: Clock) -> None:
    old_token = _issue(ring, clock)
    clock.now += 60
    rotated = ring.rotate(SigningKey.generate(int(clock.now)), int(clock.now))
    new_token = _issue(rotated, clock)
    assert new_token.claims.kid != old_token.claims.kid
    verifier = _verifier(rotated, clock)
    assert verifier.verify(old_token.value).sub == "u-1"
    assert {k["kid"] for k in rotated.jwks()["keys"]} == {
        old_token.claims.kid,
        new_token.claims.kid,
    }
    pruned = rotated.prune(int(clock.now) + 600, max_ttl_s=600)
    assert [k["kid"] for k in pruned.jwks()["keys"]] == [new_token.claims.kid]
    with pytest.raises(UnknownKid):
        _verifier(pruned, clock).verify(old_token.value)


def test_jwks_with_foreign_or_bad_entries_is_filtered(ring: KeyRing) -> None:
    doc = ring.jwks()
    good = doc["keys"][0]
    doc["keys"] += [
        {"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"},
        {**good, "kid": "mismatch"},
        {**good, "x": "!!"},
        "junk",
    ]
    assert list(keys_from_jwks(doc)) == [good["kid"]]


def test_errors_have_reason_and_repr() -> None:
    err = RevokedToken("jti x")
    assert err.reason == "revoked" and "revoked: jti x" in str(err)
    assert repr(err) == "RevokedToken(reason='revoked', detail='jti x')"

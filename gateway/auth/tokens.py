"""JWT access tokens: EdDSA (Ed25519) signatures, a key ring with rotation, JWKS, verification.

Theory of operation
-------------------
* A token is a JWS compact serialization with header ``{"alg": "EdDSA", "typ": "JWT", "kid"}``
  and claims ``iss, aud, sub, inst, groups, perms, iat, nbf, exp, jti``. The only algorithm
  is EdDSA: the verifier refuses any other ``alg`` (``none``, ``HS256``, ``RS256``, ``ES256``)
  *before* a key is looked up, so no algorithm confusion can pick a key of the wrong kind.
* A :class:`KeyRing` holds the current signing key and the public keys still published: on
  rotation the old key is retired but stays in the JWKS until every token it signed has
  expired (``retired_at + max token lifetime``).
* :class:`TokenVerifier` checks, in order: shape, algorithm, ``kid`` known, signature, issuer,
  audience, required claims and their types, ``exp``/``nbf``/``iat`` against the clock passed
  in, then revocation via a callback. Each failure raises a :class:`TokenError` subclass with a
  ``reason`` string the gateway returns as is.
* A token's ``groups`` and ``perms`` are what the principal had when it logged in. With a
  ``current_access`` callback (the IAM service's one indexed query, which also answers
  revocation) the verifier narrows them to what the principal has *now*: the claims it
  returns carry the intersection, so a permission revoked (directly, by leaving a group, or
  from the group) stops working for tokens already issued at the next verification. A token
  never gains a permission granted after it was issued: that needs a new login.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALGORITHM = "EdDSA"
MAX_TOKEN_CHARS = 8192
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")  # alg "none": empty
DEFAULT_TTL_S = 900
Clock = Callable[[], float]


class TokenError(Exception):
    """A token was refused; ``reason`` says why in one word."""

    reason = "invalid"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)
        self.detail = detail

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, detail={self.detail!r})"


class MalformedToken(TokenError):
    reason = "malformed"


class WrongAlgorithm(TokenError):
    reason = "wrong_alg"


class UnknownKid(TokenError):
    reason = "unknown_kid"


class BadSignature(TokenError):
    reason = "bad_signature"


class WrongIssuer(TokenError):
    reason = "wrong_issuer"


class WrongAudience(TokenError):
    reason = "wrong_audience"


class ExpiredToken(TokenError):
    reason = "expired"


class NotYetValidToken(TokenError):
    reason = "not_yet_valid"


class RevokedToken(TokenError):
    reason = "revoked"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A key's ``kid``: base64url of the first 16 bytes of SHA-256 of its raw bytes."""
    return _b64u(hashlib.sha256(raw_public(key)).digest()[:16])


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An Ed25519 private key of the institution, with its ``kid`` and creation time."""

    private: Ed25519PrivateKey = field(repr=False)
    created_at: int = 0

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def kid(self) -> str:
        return key_id(self.public)

    @classmethod
    def generate(cls, created_at: int) -> SigningKey:
        return cls(Ed25519PrivateKey.generate(), created_at)


@dataclass(frozen=True, slots=True)
class PublishedKey:
    """A public key in the JWKS; ``retired_at`` is when it stopped signing (None: current)."""

    kid: str
    public: Ed25519PublicKey = field(repr=False)
    retired_at: int | None = None


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The current signing key and every public key still accepted."""

    current: SigningKey
    retired: tuple[PublishedKey, ...] = ()

    def published(self) -> list[PublishedKey]:
        return [PublishedKey(self.current.kid, self.current.public), *self.retired]

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        for key in self.published():
            if key.kid == kid:
                return key.public
        return None

    def rotate(self, new: SigningKey, now: int) -> KeyRing:
        """``new`` signs from now on; the old current key is retired at ``now``."""
        old = PublishedKey(self.current.kid, self.current.public, now)
        return KeyRing(new, (old, *self.retired))

    def prune(self, now: int, max_ttl_s: int) -> KeyRing:
        """Drop retired keys whose every token has expired."""
        keep = tuple(
            k for k in self.retired if k.retired_at is None or k.retired_at + max_ttl_s > now
        )
        return KeyRing(self.current, keep)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (RFC 7517, OKP keys of RFC 8037)."""
        return jwks_document(self.published())


def jwks_document(keys: Iterable[PublishedKey]) -> dict[str, Any]:
    """A JWKS document of Ed25519 public keys."""
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64u(raw_public(k.public)),
                "kid": k.kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
            for k in keys
        ]
    }


def keys_from_jwks(document: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """``kid -> key`` of the Ed25519 keys of a JWKS document (others are ignored)."""
    out: dict[str, Ed25519PublicKey] = {}
    for entry in document.get("keys", ()):
        if not isinstance(entry, Mapping):
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        if entry.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            key = Ed25519PublicKey.from_public_bytes(_unb64u(str(entry["x"])))
        except (KeyError, ValueError):
            continue
        kid = entry.get("kid")
        if isinstance(kid, str) and kid == key_id(key):
            out[kid] = key
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    """The verified claims of a token."""

    iss: str
    aud: str
    sub: str
    inst: str
    groups: tuple[str, ...]
    perms: frozenset[str]
    iat: int
    nbf: int
    exp: int
    jti: str
    kid: str

    def has(self, permission: str) -> bool:
        return permission in self.perms


@dataclass(frozen=True, slots=True)
class Access:
    """A principal's current group memberships and (direct and inherited) permissions."""

    groups: frozenset[str]
    perms: frozenset[str]


@dataclass(frozen=True, slots=True)
class Token:
    """An issued token: the compact JWT and its claims (and, from a password login, the
    client's device token, see :mod:`gateway.auth.devices`)."""

    value: str = field(repr=False)
    claims: Claims
    device_token: str = field(default="", repr=False)


class TokenIssuer:
    """Signs tokens with the current key of a key ring (``ring`` may be a callable)."""

    def __init__(
        self,
        ring: KeyRing | Callable[[], KeyRing],
        *,
        issuer: str,
        audience: str,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Clock,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("token lifetime must be positive")
        self._ring = ring
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._clock = clock

    def ring(self) -> KeyRing:
        return self._ring() if callable(self._ring) else self._ring

    def issue(self, *, sub: str, inst: str, groups: Sequence[str], perms: Iterable[str]) -> Token:
        key = self.ring().current
        now = int(self._clock())
        claims = Claims(
            iss=self.issuer,
            aud=self.audience,
            sub=sub,
            inst=inst,
            groups=tuple(sorted(groups)),
            perms=frozenset(perms),
            iat=now,
            nbf=now,
            exp=now + self.ttl_s,
            jti=secrets.token_urlsafe(16),
            kid=key.kid,
        )
        payload = {
            "iss": claims.iss,
            "aud": claims.aud,
            "sub": claims.sub,
            "inst": claims.inst,
            "groups": list(claims.groups),
            "perms": sorted(claims.perms),
            "iat": claims.iat,
            "nbf": claims.nbf,
            "exp": claims.exp,
            "jti": claims.jti,
        }
        value = jwt.encode(
            payload, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "JWT"}
        )
        return Token(value, claims)


def narrow(claims: Claims, access: Access) -> Claims:
    """``claims`` with only the groups and permissions the principal still has."""
    groups = tuple(g for g in claims.groups if g in access.groups)
    perms = claims.perms & access.perms
    if groups == claims.groups and perms == claims.perms:
        return claims
    return replace(claims, groups=groups, perms=perms)


KeyLookup = Callable[[str], Ed25519PublicKey | None]
_REQUIRED = ("iss", "aud", "sub", "inst", "groups", "perms", "iat", "nbf", "exp", "jti")


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MalformedToken("groups and perms must be lists of strings")
    return tuple(value)


def _int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedToken(f"{name} must be an integer")
    return value


class TokenVerifier:
    """Verifies tokens of one issuer and audience; keys by ``kid`` from a ring or JWKS."""

    def __init__(
        self,
        keys: KeyRing | KeyLookup,
        *,
        issuer: str,
        audience: str,
        clock: Clock,
        is_revoked: Callable[[Claims], bool] | None = None,
        current_access: Callable[[Claims], Access | None] | None = None,
        leeway_s: int = 0,
    ) -> None:
        """``current_access``: the principal's access now, None if the token is revoked
        (replaces ``is_revoked``; the claims returned are narrowed to it)."""
        self._lookup: KeyLookup = keys.public_key if isinstance(keys, KeyRing) else keys
        self.issuer = issuer
        self.audience = audience
        self._clock = clock
        self._is_revoked = is_revoked
        self._current_access = current_access
        self.leeway_s = leeway_s

    @classmethod
    def from_jwks(cls, document: Mapping[str, Any], **kwargs: Any) -> TokenVerifier:
        """A verifier that trusts the keys of a JWKS document."""
        keys = keys_from_jwks(document)
        return cls(keys.get, **kwargs)

    def _header(self, token: str) -> tuple[str, Ed25519PublicKey]:
        if (
            not isinstance(token, str)
            or len(token) > MAX_TOKEN_CHARS
            # three unpadded base64url segments and nothing else: a lone surrogate (a JSON
            # string can carry one) made PyJWT's UTF-8 encoding raise UnicodeEncodeError, and
            # "=" padding appended to a genuine token was accepted as the same token
            or _COMPACT_JWS.fullmatch(token) is None
        ):
            raise MalformedToken("not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise MalformedToken(str(exc)) from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise WrongAlgorithm(f"alg {alg!r} is not {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise UnknownKid("no kid in the header")
        key = self._lookup(kid)
        if key is None:
            raise UnknownKid(kid)
        return kid, key

    def verify(self, token: str) -> Claims:
        """The token's claims if it is valid now; else a :class:`TokenError`."""
        kid, key = self._header(token)
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": list(_REQUIRED),
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise BadSignature("signature does not match the payload") from None
        except jwt.InvalidIssuerError:
            raise WrongIssuer(f"expected {self.issuer}") from None
        except jwt.InvalidAudienceError:
            raise WrongAudience(f"expected {self.audience}") from None
        except jwt.InvalidAlgorithmError as exc:
            raise WrongAlgorithm(str(exc)) from None
        except jwt.PyJWTError as exc:
            raise MalformedToken(str(exc)) from None
        claims = self._claims(payload, kid)
        self._check_time(claims)
        if self._is_revoked is not None and self._is_revoked(claims):
            raise RevokedToken(f"token {claims.jti} of {claims.sub} was revoked")
        if self._current_access is not None:
            access = self._current_access(claims)
            if access is None:
                raise RevokedToken(f"token {claims.jti} of {claims.sub} was revoked")
            claims = narrow(claims, access)
        return claims

    def _claims(self, payload: Mapping[str, Any], kid: str) -> Claims:
        for name in ("sub", "inst", "jti", "iss"):
            if not isinstance(payload.get(name), str):
                raise MalformedToken(f"{name} must be a string")
        aud = payload["aud"]
        return Claims(
            iss=payload["iss"],
            aud=aud if isinstance(aud, str) else self.audience,
            sub=payload["sub"],
            inst=payload["inst"],
            groups=_str_list(payload["groups"]),
            perms=frozenset(_str_list(payload["perms"])),
            iat=_int(payload["iat"], "iat"),
            nbf=_int(payload["nbf"], "nbf"),
            exp=_int(payload["exp"], "exp"),
            jti=payload["jti"],
            kid=kid,
        )

    def _check_time(self, claims: Claims) -> None:
        now = self._clock()
        if claims.exp <= now - self.leeway_s:
            raise ExpiredToken(f"expired at {claims.exp}")
        if claims.nbf > now + self.leeway_s or claims.iat > now + self.leeway_s:
            raise NotYetValidToken(f"not valid before {max(claims.nbf, claims.iat)}")

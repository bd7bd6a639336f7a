"""How the gateway authenticates: protocols it is given, never constructs itself.

Theory of operation
-------------------
* The app receives an :class:`Authenticator` (``verify(token) -> Claims`` raising a
  :class:`~gateway.auth.tokens.TokenError`): in production the IAM service's
  :class:`~gateway.auth.tokens.TokenVerifier` (signature, issuer, audience, time, revocation);
  in tests the same class over a key ring of the test.
* :class:`Accounts` is the part of :class:`~gateway.iam.service.IamService` the mutations call
  (login and user administration); it is optional: without it those mutations answer
  ``SERVICE_UNAVAILABLE``.
* :class:`CachingAuthenticator` remembers a *successful* verification for ``ttl_s`` seconds
  (never past the token's ``exp``), so a burst of requests with one token costs one signature
  check and one revocation query per second. A revocation therefore takes effect within
  ``ttl_s``. Failures are never cached.
* A token must also name this gateway's institution (``inst``); tokens of another institution
  are refused with reason ``wrong_institution``. That holds for a token of another
  institution's gateway too, although this gateway cannot check its signature (another
  institution's keys are not in its key ring, so the verifier says ``unknown_kid`` or
  ``wrong_issuer``): the unverified ``inst`` claim then only names the institution in the
  error, so the client learns to log in at its own gateway. The token is refused either way.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt

from gateway.auth.tokens import Claims, Token, TokenError, UnknownKid, WrongIssuer
from gateway.errors import Forbidden, Unauthenticated

Clock = Callable[[], float]


class Authenticator(Protocol):
    """Verifies a compact JWT; raises a :class:`TokenError` subclass when it is refused."""

    def verify(self, token: str) -> Claims: ...


class Accounts(Protocol):
    """Login and user administration (implemented by ``IamService``)."""

    def login(
        self, username: str, password: str, source: str, device_token: str | None = ...
    ) -> Token: ...

    def create_user(
        self, actor: str, login: str, password: str, profile: Mapping[str, str] = ...
    ) -> str: ...

    def disable_user(self, actor: str, user_id: str, reason: str = "") -> None: ...

    def forget_user(self, actor: str, user_id: str) -> None: ...

    def create_group(self, actor: str, group: str, description: str = "") -> None: ...

    def add_member(self, actor: str, user_id: str, group: str) -> None: ...

    def grant(self, actor: str, subject: str, permission: str) -> None: ...

    def revoke(self, actor: str, subject: str, permission: str) -> None: ...

    def revoke_all_tokens(self, actor: str, user_id: str) -> None: ...

    def jwks(self) -> dict[str, Any]: ...


class CachingAuthenticator:
    """Wraps an :class:`Authenticator`; successful results are reused for ``ttl_s``."""

    def __init__(
        self,
        inner: Authenticator,
        *,
        ttl_s: float = 1.0,
        max_entries: int = 10_000,
        clock: Clock = time.time,
    ) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[float, Claims]] = OrderedDict()

    def cached(self, token: str) -> Claims | None:
        """The claims of a recently verified, still unexpired token, without any I/O."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(token)
            if hit is None:
                return None
            until, claims = hit
            if now >= until or now >= claims.exp:
                del self._cache[token]
                return None
            return claims

    def verify(self, token: str) -> Claims:
        claims = self.cached(token)
        if claims is not None:
            return claims
        claims = self.inner.verify(token)
        until = min(self._clock() + self.ttl_s, float(claims.exp))
        with self._lock:
            self._cache[token] = (until, claims)
            self._cache.move_to_end(token)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return claims


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None if absent)."""
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'", reason="malformed"
        )
    return value.strip()


def _claimed_institution(token: str) -> str | None:
    """The ``inst`` claim of a token whose signature could not be checked (for messages)."""
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    inst = payload.get("inst") if isinstance(payload, dict) else None
    if isinstance(inst, str) and 0 < len(inst) <= 64 and inst.isprintable():
        return inst
    return None


def authenticate(verifier: Authenticator, token: str, institution: str) -> Claims:
    """Verified claims of ``token`` for this institution, or :class:`Unauthenticated`."""
    try:
        claims = verifier.verify(token)
    except TokenError as exc:
        if isinstance(exc, UnknownKid | WrongIssuer):
            claimed = _claimed_institution(token)
            if claimed is not None and claimed != institution:
                raise Unauthenticated(
                    f"the token was issued for institution {claimed!r}; this gateway serves "
                    f"{institution!r} and accepts only its own tokens",
                    reason="wrong_institution",
                ) from None
        raise Unauthenticated(f"invalid token: {exc.reason}", reason=exc.reason) from None
    if claims.inst != institution:
        raise Unauthenticated(
            f"the token was issued for institution {claims.inst!r}", reason="wrong_institution"
        )
    return claims


#: The chain-reading permission an anonymous caller gets where chain data is public.
PUBLIC_READ = "chain:read"


def anonymous(institution: str) -> Claims:
    """The claims of a caller without a token where chain data is public (decisions D39).

    They carry only ``chain:read``, name no user (empty ``sub`` and ``kid``: every issued
    token has a key id) and never expire; :func:`require` treats them as no token for
    anything else, so ``me``, mutations and the data proxy still answer 401."""
    return Claims(
        iss="",
        aud="",
        sub="",
        inst=institution,
        groups=(),
        perms=frozenset({PUBLIC_READ}),
        iat=0,
        nbf=0,
        exp=2**62,
        jti="",
        kid="",
    )


def is_anonymous(claims: Claims | None) -> bool:
    """True for no claims or the claims of :func:`anonymous`."""
    return claims is None or (claims.kid == "" and claims.sub == "")


def require(claims: Claims | None, permission: str | None) -> None:
    """Raise unless ``claims`` exist and (if given) carry ``permission``.

    Anonymous claims satisfy only the permission they carry, never "any valid token"."""
    public = claims is not None and permission is not None and claims.has(permission)
    if is_anonymous(claims) and not public:
        raise Unauthenticated("a token is required: log in first", reason="missing")
    assert claims is not None
    if permission is not None and not claims.has(permission):
        raise Forbidden(f"the token lacks the {permission!r} permission", required=permission)

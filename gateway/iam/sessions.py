"""Login and tokens of one institution: throttled password and API-credential logins, the
signing key ring, and the verifier that narrows a token to its principal's current access
(module docstring of :mod:`gateway.iam.service`). Who a principal is, whether it is active,
its permissions, revocations and sealed password hash come from the IAM view folded from
the signed topic (:mod:`gateway.iam.view`), never from the IAM tables."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool

from gateway.auth import passwords
from gateway.auth.crypto import CryptoError, DataKey, MasterKey, open_text, seal_text
from gateway.auth.devices import DeviceTokens
from gateway.auth.throttle import Throttle, Throttled
from gateway.auth.tokens import (
    Access,
    Claims,
    KeyRing,
    Token,
    TokenError,
    TokenIssuer,
    TokenVerifier,
)
from gateway.iam import data_keys, sealed_rows, store
from gateway.iam.commands import ChangePassword, Command
from gateway.iam.errors import IamError, LoginFailed, LoginThrottled, TamperedRow
from gateway.iam.kek import KekStore
from gateway.iam.view import IamView, IamViewUnavailable

PASSWORD_FIELD = "password_hash"


class AccessUnknown(TokenError):
    """The principal's current access cannot be known yet (the gateway has not read its IAM
    topic since it started): refused, never guessed; asking again shortly works."""

    reason = "access_unknown"


class Sessions:
    """Logins, token issuing and verification; ``execute`` runs a command (the service's),
    used to upgrade a password hash at login."""

    def __init__(
        self,
        *,
        pool: ConnectionPool[Any],
        institution: str,
        master_key: MasterKey,
        keys: KekStore,
        execute: Callable[[Command], int],
        audience: str,
        token_ttl_s: int,
        password_params: passwords.ScryptParams,
        throttle: Throttle,
        clock: Callable[[], float],
        view: IamView,
    ) -> None:
        self._pool = pool
        self._view = view
        self.institution = institution
        self._master = master_key
        self._keys = keys
        self._execute = execute
        self._params = password_params
        self._throttle = throttle
        self._devices = DeviceTokens(master_key, institution, clock=clock)
        self._clock = clock
        self.issuer_name = f"pantheon:iam:{institution}"
        self.audience = audience
        self.token_ttl_s = token_ttl_s
        self._ring = self._load_ring()
        self._ring_loaded = time.monotonic()
        self.issuer = TokenIssuer(
            lambda: self._ring,
            issuer=self.issuer_name,
            audience=audience,
            ttl_s=token_ttl_s,
            clock=clock,
        )

    def login(
        self, username: str, password: str, source: str, device_token: str | None = None
    ) -> Token:
        """A token for a user's correct password; :class:`LoginFailed` otherwise.

        ``device_token``: the one a previous successful login of this client returned (the
        throttle then counts this client on its own); the token returned carries a new one."""
        now = self._clock()
        device = self._devices.verify(username, device_token)
        try:
            self._throttle.check(username, source, now, device)
        except Throttled as exc:
            raise LoginThrottled(exc.retry_after) from None
        found = self._password(username)
        if found is None:
            passwords.dummy_verify(password, self._params)
            return self._login_failed(username, source, now, device)
        user_id, stored, dk = found
        if not passwords.verify_password(password, stored):
            return self._login_failed(username, source, now, device)
        self._throttle.success(username, source, now, device)
        if passwords.needs_rehash(stored, self._params):
            self._rehash(user_id, password, dk)
        token = self._issue(user_id)
        return dataclasses.replace(token, device_token=self._devices.issue(username, device))

    def _password(self, username: str) -> tuple[str, str, DataKey] | None:
        """``(user id, password hash, data key)`` of ``username``; None if unknown, disabled
        or forgotten (the view says), or if its data key or sealed hash does not open (a
        tampered key row: logged, and refused like a wrong password, D70)."""
        found = self._view.password_hash(username)
        if found is None:
            return None
        (user_id, sealed), table = found, "iam_data_keys"
        try:
            with self._pool.connection() as conn:
                dk = data_keys.get_data_key(conn, self._keys, self.institution, user_id)
            if dk is None:
                return None
            table = "iam_events"
            stored = open_text(dk, self.institution, user_id, PASSWORD_FIELD, sealed)
        except CryptoError as exc:
            sealed_rows.log_tampered(self.institution, TamperedRow(table, user_id, str(exc)))
            return None
        return user_id, stored, dk

    def _rehash(self, user_id: str, password: str, dk: DataKey) -> None:
        # Parameters were raised since this hash was made: upgrade it now that we know the
        # password. A failure only postpones the upgrade to the next login.
        hashed = passwords.hash_password(password, self._params)
        sealed = seal_text(dk, self.institution, user_id, PASSWORD_FIELD, hashed)
        with contextlib.suppress(IamError):
            self._execute(ChangePassword(actor=user_id, user_id=user_id, password_hash=sealed))

    def login_service(self, credential: str, source: str) -> Token:
        """A token for a service account's API credential ``<account id>.<secret>``."""
        account_id, _, secret = credential.partition(".")
        now = self._clock()
        try:
            self._throttle.check(account_id, source, now)
        except Throttled as exc:
            raise LoginThrottled(exc.retry_after) from None
        sealed = self._view.credential_hash(account_id)
        stored = None if sealed is None else self._credential(account_id, sealed)
        if stored is None or not passwords.verify_password(secret, stored):
            return self._login_failed(account_id, source, now)
        self._throttle.success(account_id, source, now)
        return self._issue(account_id)

    def _credential(self, account_id: str, sealed: str) -> str | None:
        """The account's credential hash; None (logged) unless the gateway sealed it for this
        account (a hash written into the table, or one written before D70)."""
        try:
            return sealed_rows.open_credential(self._master, self.institution, account_id, sealed)
        except TamperedRow as exc:
            sealed_rows.log_tampered(self.institution, exc)
            return None

    def _login_failed(
        self, login: str, source: str, now: float, device: str | None = None
    ) -> Token:
        self._throttle.failure(login, source, now, device)
        raise LoginFailed("wrong login or password, or account disabled")

    def _issue(self, principal_id: str) -> Token:
        access = self._view.access_of(principal_id)
        # A token's iat has whole seconds: never issue in the second of a revoke-all.
        not_before_s = (self._view.not_before_ms(principal_id) + 999) // 1000
        deadline = time.monotonic() + 1.1
        while self._clock() < not_before_s and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.issuer.issue(
            sub=principal_id,
            inst=self.institution,
            groups=sorted(access.groups),
            perms=sorted(access.perms),
        )

    def is_revoked(self, claims: Claims) -> bool:
        """True if the token was revoked, or its principal is disabled, forgotten or unknown."""
        return self.current_access(claims) is None

    def current_access(self, claims: Claims) -> Access | None:
        """The principal's current groups and permissions; None if the token is revoked."""
        if claims.inst != self.institution:
            return None
        try:
            return self._view.access(claims)
        except IamViewUnavailable as exc:
            raise AccessUnknown(exc.detail) from None

    def _load_ring(self) -> KeyRing:
        with self._pool.connection() as conn, conn.transaction():
            return store.load_key_ring(
                conn, self._master, self.institution, int(self._clock()), self.token_ttl_s
            )

    def _public_key(self, kid: str) -> Any:
        key = self._ring.public_key(kid)
        if key is None and time.monotonic() - self._ring_loaded > 1.0:
            # Another replica may have rotated: reload at most once a second.
            self._ring = self._load_ring()
            self._ring_loaded = time.monotonic()
            key = self._ring.public_key(kid)
        return key

    def rotate_signing_key(self) -> str:
        """Make a new signing key current; old tokens stay valid until they expire."""
        with self._pool.connection() as conn, conn.transaction():
            key = store.add_signing_key(conn, self._master, self.institution, int(self._clock()))
        self._ring = self._load_ring()
        self._ring_loaded = time.monotonic()
        return key.kid

    def verifier(self, *, check_revocation: bool = True) -> TokenVerifier:
        """A verifier of this institution's tokens (revocation checked in the database, and
        the token's permissions narrowed to the principal's current ones)."""
        return TokenVerifier(
            self._public_key,
            issuer=self.issuer_name,
            audience=self.audience,
            clock=self._clock,
            current_access=self.current_access if check_revocation else None,
        )

    def jwks(self) -> dict[str, Any]:
        """The JWKS document of the institution's current and still-valid retired keys."""
        if time.monotonic() - self._ring_loaded > 30.0:  # pick up other replicas' rotations
            self._ring = self._load_ring()
            self._ring_loaded = time.monotonic()
        return self._ring.jwks()

"""The IAM service: commands in, events on the institution's IAM topic, tokens out.

Theory of operation
-------------------
* A command is decided by the pure :func:`gateway.iam.commands.decide` against the state
  the service's :class:`~gateway.iam.view.IamView` folded from the signed topic (never the
  IAM tables, which whoever can write PostgreSQL could change), then its events are
  produced to ``<prefix>iam.<institution>`` (key = subject, idempotent producer,
  ``acks=all``) and the call returns only once the IAM projection projected them
  (read-your-writes through :func:`projections.runner.wait_for_offset`) and the view
  accepted them; the projection must be running (in the gateway process or its own).
  Commands of one service are serialized by a lock.
* Every event is signed (D21) by the institution's IAM SERVICE key (:class:`IamSigner`) in
  ``_produce``, the one path onto the topic; readers apply only events signed by a key the
  certified chain says is active for the institution.
* Readers decide an event only once a certified block is stamped after its append time
  minus S (D56); on a chain idle for longer, the publisher sends one ``AnchorData`` signed by
  that key so the chain cuts one (D62, :mod:`gateway.iam.clock_tick`, at most one per S).
* Secrets never reach the topic in clear: passwords become scrypt hashes, then the hash and
  the personal fields are sealed under the user's data key (created in ``iam_data_keys``
  before the event is produced, wrapped under the KEK in ``kek_dir``); a service account's
  credential hash is sealed under the master key for that account (D70,
  :mod:`gateway.iam.sealed_rows`: a hash written into PostgreSQL logs nobody in).
  Forgetting a user destroys that key first (a KEK rotation, D25: no older copy of it
  unwraps either), then produces ``UserForgotten``.
* Login is throttled per client of a login (device token or source), per login for clients
  never seen to log in, and per source (:mod:`gateway.auth.throttle`; with
  ``shared_throttle`` the counters live in PostgreSQL, shared by every gateway process of the
  institution, :mod:`gateway.iam.throttle_store`), so a password guesser
  cannot lock the owner out of their own client; every successful login returns a device
  token (:mod:`gateway.auth.devices`). It does the same scrypt work for unknown logins, and
  answers one :class:`~gateway.iam.errors.LoginFailed` for every refusal.
* Tokens are signed by the institution's current Ed25519 key (``iam_signing_keys``); the
  verifier from :meth:`IamService.verifier` also refuses tokens of disabled, forgotten or
  revoked principals, and narrows a token's groups and permissions to the principal's current
  ones (a revoked permission stops working for tokens already issued), from the view in
  memory (:meth:`gateway.iam.view.IamView.access`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from psycopg_pool import ConnectionPool

from gateway.auth import passwords
from gateway.auth.crypto import (
    CryptoError,
    DataKey,
    MasterKey,
)
from gateway.auth.permissions import Permission
from gateway.auth.throttle import LoginThrottle, Throttle
from gateway.auth.tokens import Access, Claims, Token, TokenVerifier
from gateway.iam import data_keys, sealed_rows, store
from gateway.iam.clock_tick import ClockTicker
from gateway.iam.commands import (
    BootstrapAdmin,
    ChangeGrant,
    ChangeMembership,
    ChangePassword,
    Command,
    CreateGroup,
    CreateServiceAccount,
    CreateUser,
    DisableUser,
    ForgetUser,
    RevokeTokens,
    UpdateProfile,
    decide,
)
from gateway.iam.errors import (
    AlreadyBootstrapped,
    BadSetupCredential,
    IamError,
    NotAuthorized,
)
from gateway.iam.kek import KekStore
from gateway.iam.personal_data import PersonalData
from gateway.iam.publisher import IamPublisher
from gateway.iam.sessions import Sessions
from gateway.iam.signing import IamSigner
from gateway.iam.throttle_store import SharedLoginThrottle
from gateway.iam.view import IamView
from projections import iam as iam_projection
from projections.iam_signers import ChainSigners, SignerPolicy
from runtime.delivery import close_producer
from runtime.kafka_config import producer_config
from runtime.topics import DEFAULT_PREFIX, iam_topic

log = logging.getLogger("pantheon.iam")


class IamService:
    """User management, login and token verification of one institution."""

    def __init__(
        self,
        *,
        bootstrap: str,
        dsn: str,
        institution: str,
        master_key: MasterKey,
        prefix: str = DEFAULT_PREFIX,
        audience: str = "pantheon:gateway",
        token_ttl_s: int = 900,
        password_params: passwords.ScryptParams = passwords.DEFAULT,
        throttle: Throttle | None = None,
        shared_throttle: bool = False,
        clock: Callable[[], float] = time.time,
        apply_timeout_s: float = 15.0,
        producer: Producer | None = None,
        signer: IamSigner,
        kek_dir: Path | None = None,
        signers: SignerPolicy | None = None,
    ) -> None:
        """``signers``: whose signatures the view believes, as the IAM projection's policy.
        Production passes :class:`~projections.iam_certified.CertifiedSigners` (``pantheon
        gateway --genesis``, ``pantheon iam``; D75); the default,
        :class:`~projections.iam_signers.ChainSigners`, believes the chain tables as written."""
        self.institution = institution
        self.signer = signer
        self.topic = iam_topic(institution).name(prefix)
        self.projection = iam_projection.projection_name(institution)
        self.dsn = dsn
        self._master = master_key
        # Where the key-encryption keys live (D25); None only in tests (no real shredding).
        self._keys = KekStore(kek_dir, master_key, institution)
        self._params = password_params
        self._clock = clock
        self._apply_timeout_s = apply_timeout_s
        self._producer = producer or Producer(producer_config(bootstrap))
        self._lock = threading.Lock()
        self._pool = ConnectionPool(
            dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        self.view = IamView(
            bootstrap=bootstrap,
            topic=self.topic,
            institution=institution,
            pool=self._pool,
            signers=signers or ChainSigners(),
        )
        self._publisher = IamPublisher(
            institution=institution,
            topic=self.topic,
            dsn=dsn,
            pool=self._pool,
            producer=self._producer,
            apply_timeout_s=apply_timeout_s,
            view=self.view,
            ticker=ClockTicker(
                institution=institution,
                tx_topic=f"{prefix}tx",
                pool=self._pool,
                producer=self._producer,
                timeout_s=apply_timeout_s,
            ),
        )
        self.personal = PersonalData(
            pool=self._pool,
            keys=self._keys,
            institution=institution,
            password_params=password_params,
            view=self.view,
        )
        with self._pool.connection() as conn:
            iam_projection.migrate(conn)
            try:  # finishes a KEK rotation a crash interrupted
                data_keys.ensure_kek(conn, self._keys)
            except CryptoError as exc:  # data keys unusable; tokens and the chain still work
                log.error("IAM data keys unavailable: %s", exc)
        self.sessions = Sessions(
            pool=self._pool,
            institution=institution,
            master_key=master_key,
            keys=self._keys,
            execute=self.execute,
            audience=audience,
            token_ttl_s=token_ttl_s,
            password_params=password_params,
            throttle=throttle
            or (SharedLoginThrottle(self._pool) if shared_throttle else LoginThrottle()),
            clock=clock,
            view=self.view,
        )
        self.issuer_name = self.sessions.issuer_name
        self.audience = audience
        self.token_ttl_s = token_ttl_s
        self.issuer = self.sessions.issuer

    def close(self) -> None:
        """Flush and close the producer, stop the view, close the connection pool."""
        close_producer(self._producer, 10)
        self.view.close()
        self._pool.close()

    # -- events ---------------------------------------------------------------------------
    def publish(self, events: Sequence[Any], *, projection: str) -> None:
        """Produce events of another projection of this topic (the stored objects', D23)
        through the same producer path as the IAM events, and wait until ``projection``
        applied them."""
        with self._lock:
            self._produce(list(events), projection=projection)

    def _produce(self, events: list[Any], *, projection: str | None = None) -> None:
        """The one way onto the IAM topic (:meth:`IamPublisher.produce`), with the current
        :attr:`signer`."""
        self._publisher.produce(events, self.signer, projection=projection or self.projection)

    def _decide(self, command: Command) -> list[Any]:
        self.view.wait_ready(self._apply_timeout_s)
        return decide(
            self.view.state,
            command,
            now_ms=int(self._clock() * 1000),
            new_event_id=lambda: uuid.uuid4().hex,
        )

    def execute(self, command: Command) -> int:
        """Decide, produce and wait for ``command``; returns the number of events."""
        with self._lock:
            events = self._decide(command)
            self._produce(events)
            return len(events)

    # -- bootstrap ------------------------------------------------------------------------
    def bootstrap_admin(
        self, setup_token: str, login: str, password: str, profile: Mapping[str, str] = {}
    ) -> str:
        """Create the institution administrator with the one-time setup credential."""
        passwords.check_password_policy(password)
        user_id = _new_id("u")
        with self._lock, self._pool.connection() as conn, conn.transaction():
            self.view.wait_ready(self._apply_timeout_s)
            if self.view.state.bootstrapped:
                raise AlreadyBootstrapped(self.institution)
            if not store.check_setup_credential(conn, self._master, self.institution, setup_token):
                raise BadSetupCredential("unknown or already used setup credential")
            sealed_hash, sealed_profile, key_id = self.personal.seal_new_user(
                user_id, password, profile
            )
            command = BootstrapAdmin(
                user_id=user_id,
                login=login,
                password_hash=sealed_hash,
                encrypted_profile=sealed_profile,
                data_key_id=key_id,
            )
            with self.personal.discard_if_refused(user_id):
                self._produce(self._decide(command))
            store.consume_setup_credential(conn, self.institution)
        return user_id

    # -- administration -------------------------------------------------------------------
    def create_user(
        self, actor: str, login: str, password: str, profile: Mapping[str, str] = {}
    ) -> str:
        """Create a user (actor needs ``admin``); returns the new user id."""
        passwords.check_password_policy(password)
        self._precheck_admin(actor)
        user_id = _new_id("u")
        sealed_hash, sealed_profile, key_id = self.personal.seal_new_user(
            user_id, password, profile
        )
        with self.personal.discard_if_refused(user_id):
            self.execute(
                CreateUser(
                    actor=actor,
                    user_id=user_id,
                    login=login,
                    password_hash=sealed_hash,
                    encrypted_profile=sealed_profile,
                    data_key_id=key_id,
                )
            )
        return user_id

    def _precheck_admin(self, actor: str) -> None:
        # Refuse before a data key is written or scrypt runs for an unauthorized caller.
        self.view.wait_ready(self._apply_timeout_s)
        state = self.view.state
        principal = state.principal(actor)
        if principal is None or not principal.active:
            raise NotAuthorized(f"{actor!r} is not an active principal")
        if Permission.ADMIN not in state.permissions_of(actor):
            raise NotAuthorized(f"{actor} lacks the admin permission")

    def create_service_account(self, actor: str, name: str) -> tuple[str, str]:
        """Create a service account; returns ``(account id, API credential)`` (shown once)."""
        self._precheck_admin(actor)
        account_id = _new_id("s")
        secret = uuid.uuid4().hex + uuid.uuid4().hex
        credential_hash = sealed_rows.seal_credential(
            self._master,
            self.institution,
            account_id,
            passwords.hash_password(secret, self._params),
        )
        self.execute(
            CreateServiceAccount(
                actor=actor, account_id=account_id, name=name, credential_hash=credential_hash
            )
        )
        return account_id, f"{account_id}.{secret}"

    def disable_user(self, actor: str, user_id: str, reason: str = "") -> None:
        """Disable a user or service account: no more logins, its tokens stop working."""
        self.execute(DisableUser(actor=actor, user_id=user_id, reason=reason))

    def forget_user(self, actor: str, user_id: str) -> None:
        """Crypto-shred a user: disable them and revoke their tokens, destroy their data key
        (a KEK rotation that leaves a tombstone, D25), then record ``UserForgotten``.
        Irreversible."""
        with self._lock:
            self._decide(ForgetUser(actor=actor, user_id=user_id, data_key_id=""))  # authorize
            # Close the window before the key goes: the user's tokens stop working (disabled,
            # all revoked) so nothing they send can use or mint a data key meanwhile; the
            # tombstone rotate_kek leaves makes create_data_key refuse them from then on.
            self._produce(self._decide(DisableUser(actor=actor, user_id=user_id, reason="forget")))
            expires = int(self._clock() * 1000) + self.token_ttl_s * 1000
            self._produce(
                self._decide(
                    RevokeTokens(actor=actor, user_id=user_id, jti="", expires_at_ms=expires)
                )
            )
            key_id = self.personal.shred((user_id,)).get(user_id, "")
            self._produce(
                self._decide(ForgetUser(actor=actor, user_id=user_id, data_key_id=key_id))
            )

    def change_password(
        self, actor: str, user_id: str, new_password: str, old_password: str | None = None
    ) -> None:
        """Set a new password: one's own (``old_password`` required) or, as admin, anyone's."""
        passwords.check_password_policy(new_password)
        own = actor == user_id
        sealed = self.personal.new_password(
            user_id, new_password, own=own, old_password=old_password
        )
        self.execute(ChangePassword(actor=actor, user_id=user_id, password_hash=sealed))

    def update_profile(self, actor: str, user_id: str, profile: Mapping[str, str]) -> None:
        """Replace a user's personal fields (sealed under their data key)."""
        sealed = self.personal.seal_profile(user_id, profile)
        self.execute(UpdateProfile(actor=actor, user_id=user_id, encrypted_profile=sealed))

    def profile(self, actor: str, user_id: str) -> dict[str, str] | None:
        """A user's personal fields in clear (self or admin); None once forgotten."""
        if actor != user_id:
            self._precheck_admin(actor)
        return self.personal.profile(user_id)

    @property
    def kek_store(self) -> KekStore:
        """The KEK files, for :func:`gateway.iam.data_keys.get_data_key` on one's own connection."""
        return self._keys

    def data_key(self, user_id: str) -> DataKey | None:
        """The user's data key, for other owners of per-user ciphertexts (stored objects):
        None once the user is forgotten, and no copy of it unwraps after :meth:`forget_user`."""
        return self.personal.data_key(user_id)

    def shred_forgotten(self) -> list[str]:
        """Destroy the data keys of users the signed IAM topic says are forgotten (after
        restoring a dump older than a forget); returns their ids. ``iam_users.forgotten`` is
        not read: a row flipped there must not destroy a live user's key (D74)."""
        with self._lock:
            self.view.wait_ready(self._apply_timeout_s)  # who is forgotten: the signed topic
            state = self.view.state
            forgotten = tuple(sorted(p.id for p in state.principals.values() if p.forgotten))
            return sorted(self.personal.shred(forgotten, if_held=True))

    def create_group(self, actor: str, group: str, description: str = "") -> None:
        self.execute(CreateGroup(actor=actor, group=group, description=description))

    def add_member(self, actor: str, user_id: str, group: str) -> None:
        self.execute(ChangeMembership(actor=actor, user_id=user_id, group=group, added=True))

    def remove_member(self, actor: str, user_id: str, group: str) -> None:
        self.execute(ChangeMembership(actor=actor, user_id=user_id, group=group, added=False))

    def grant(self, actor: str, subject: str, permission: str) -> None:
        """Grant ``permission`` to a principal id or ``group:<name>``."""
        self.execute(ChangeGrant(actor=actor, subject=subject, permission=permission, granted=True))

    def revoke(self, actor: str, subject: str, permission: str) -> None:
        """Revoke ``permission`` from a principal id or ``group:<name>``."""
        self.execute(
            ChangeGrant(actor=actor, subject=subject, permission=permission, granted=False)
        )

    def revoke_token(self, actor: str, claims: Claims) -> None:
        """Revoke one token (its owner or an admin)."""
        self.execute(
            RevokeTokens(
                actor=actor, user_id=claims.sub, jti=claims.jti, expires_at_ms=claims.exp * 1000
            )
        )

    def revoke_all_tokens(self, actor: str, user_id: str) -> None:
        """Revoke every token issued to ``user_id`` until now."""
        expires = int(self._clock() * 1000) + self.token_ttl_s * 1000
        self.execute(RevokeTokens(actor=actor, user_id=user_id, jti="", expires_at_ms=expires))

    # -- login and tokens (gateway.iam.sessions) ----------------------------------------------
    def login(
        self, username: str, password: str, source: str, device_token: str | None = None
    ) -> Token:
        """:meth:`Sessions.login`."""
        return self.sessions.login(username, password, source, device_token)

    def login_service(self, credential: str, source: str) -> Token:
        """:meth:`Sessions.login_service`."""
        return self.sessions.login_service(credential, source)

    def is_revoked(self, claims: Claims) -> bool:
        """:meth:`Sessions.is_revoked`."""
        return self.sessions.is_revoked(claims)

    def current_access(self, claims: Claims) -> Access | None:
        """:meth:`Sessions.current_access`."""
        return self.sessions.current_access(claims)

    def rotate_signing_key(self) -> str:
        """:meth:`Sessions.rotate_signing_key`."""
        return self.sessions.rotate_signing_key()

    def verifier(self, *, check_revocation: bool = True) -> TokenVerifier:
        """:meth:`Sessions.verifier`."""
        return self.sessions.verifier(check_revocation=check_revocation)

    def jwks(self) -> dict[str, Any]:
        """:meth:`Sessions.jwks`."""
        return self.sessions.jwks()


def _new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:16]}"


__all__ = ["IamError", "IamService"]

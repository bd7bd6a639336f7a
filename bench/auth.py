"""Benchmarks of authentication; prints figures, asserts nothing about time.

Run with ``python -m bench.auth`` (pure: token issue and verification, the current-access
check of the gateway's IAM view (D74), scrypt, AES-GCM) or ``python -m bench.auth --db`` to
add the same check as one query against a real PostgreSQL, the way the gateway made it
before D74 (a private server started for the run, as the tests do, and stopped after).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import time
from collections.abc import Callable
from typing import Any

import psycopg

from gateway.auth import passwords
from gateway.auth.crypto import new_data_key, open_profile, seal_profile
from gateway.auth.tokens import Access, Claims, KeyRing, SigningKey, TokenIssuer, TokenVerifier
from gateway.iam.state import IamState
from gateway.iam.view import Fold
from ledger.iam_events import Opened
from projections import iam as iam_projection

ISS = "pantheon:iam:bench"
AUD = "pantheon:gateway"


def rate(label: str, count: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<52} {count / elapsed:>12,.0f} /s   ({count:,} in {elapsed:.3f} s)")
    return count / elapsed


def cost(label: str, count: int, fn: Callable[[], None]) -> None:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    elapsed = (time.perf_counter() - start) / count
    print(f"{label:<52} {elapsed * 1000:>12.1f} ms  ({1 / elapsed:,.1f} /s, one core)")


def pure(n: int) -> tuple[TokenVerifier, str]:
    ring = KeyRing(SigningKey.generate(int(time.time())))
    issuer = TokenIssuer(ring, issuer=ISS, audience=AUD, ttl_s=900, clock=time.time)
    perms = ["chain:read", "chain:write", "data:read"]
    tokens = [
        issuer.issue(sub=f"u-{i}", inst="bench", groups=["ops"], perms=perms).value
        for i in range(100)
    ]

    def issue_loop() -> None:
        for i in range(n):
            issuer.issue(sub=f"u-{i}", inst="bench", groups=["ops"], perms=perms)

    rate("token issue (EdDSA sign)", n, issue_loop)
    verifier = TokenVerifier(ring, issuer=ISS, audience=AUD, clock=time.time)

    def verify_loop() -> None:
        for i in range(n):
            verifier.verify(tokens[i % 100])

    rate("token verify (key ring, no revocation check)", n, verify_loop)
    remote = TokenVerifier.from_jwks(ring.jwks(), issuer=ISS, audience=AUD, clock=time.time)
    rate("token verify (from JWKS, no revocation check)", n, lambda: _each(remote, tokens, n))

    for params, use in ((passwords.DEFAULT, "default"), (passwords.FAST, "tests only")):
        stored = passwords.hash_password("correct horse battery", params)
        count = 10 if params is passwords.DEFAULT else 200
        label = f"scrypt verify (log2 n={params.log_n}, r={params.r}; {use})"
        cost(label, count, functools.partial(_verify, stored))

    dk = new_data_key()
    fields = {"email": "ada@example.org", "display_name": "Ada Lovelace"}

    def seal_open() -> None:
        for _ in range(n):
            open_profile(dk, "bench", "u-1", seal_profile(dk, "bench", "u-1", fields))

    rate("profile seal+open (AES-GCM, 2 fields)", n, seal_open)
    fold = _view_fold()
    token = issuer.issue(sub="u-1", inst="bench", groups=[], perms=[]).value
    narrowing = TokenVerifier(
        ring, issuer=ISS, audience=AUD, clock=time.time, current_access=fold.access
    )
    rate("token verify + current access (IAM view, D74)", n, lambda: _each(narrowing, [token], n))
    return verifier, tokens[0]


def _event(schema: str, **record: object) -> Opened:
    record["event_id"] = f"e-{id(record)}-{len(record)}-{record.get('user_id', '')}"
    body = {"institution_id": "bench", "key_height": 0, "key_id": b"", "event": b""}
    return Opened(body=body, signature=b"", schema=f"pantheon.{schema}", record=dict(record))


def _view_fold() -> Fold:
    """The IAM view's state of the database figure's shape: 1,000 users with grants of their
    own, 200 groups with grants, u-1 in 3 of them, 10,000 revoked tokens."""
    fold = Fold("bench", IamState(institution="bench"))
    for i in range(1000):
        fold.apply(_event("UserRegistered", user_id=f"u-{i}", login=f"l-{i}", password_hash=""))
        for perm in ("chain:read", "data:read"):
            fold.apply(_event("PermissionGranted", subject=f"u-{i}", permission=perm))
    for g in range(200):
        fold.apply(_event("GroupCreated", group=f"group-{g}"))
        for perm in ("chain:read", "data:read"):
            fold.apply(_event("PermissionGranted", subject=f"group:group-{g}", permission=perm))
    for g in range(1, 3001):
        user, group = f"u-{g % 1000}", f"group-{g % 200}"
        fold.apply(_event("GroupMembershipChanged", user_id=user, group=group, added=True))
    for j in range(10_000):
        fold.revoked[f"j{j}"] = 0
    return fold


# The pre-D74 check, for comparison: one round trip, every lookup by an index.
_ACCESS = (
    "SELECT u.disabled OR u.forgotten OR u.tokens_not_before_ms > %(iat_ms)s "
    "OR EXISTS (SELECT 1 FROM iam_revoked_tokens r WHERE r.jti = %(jti)s), "
    "ARRAY(SELECT m.group_name FROM iam_memberships m WHERE m.user_id = u.user_id), "
    "ARRAY(SELECT g.permission FROM iam_grants g WHERE g.subject = u.user_id "
    "UNION ALL SELECT g.permission FROM iam_memberships m "
    "JOIN iam_grants g ON g.subject = 'group:' || m.group_name WHERE m.user_id = u.user_id) "
    "FROM iam_users u WHERE u.user_id = %(sub)s"
)


def _database_access(conn: psycopg.Connection[Any], claims: Claims) -> Access | None:
    row = conn.execute(
        _ACCESS, {"iat_ms": claims.iat * 1000, "jti": claims.jti, "sub": claims.sub}
    ).fetchone()
    if row is None or row[0]:
        return None
    return Access(groups=frozenset(row[1]), perms=frozenset(row[2]))


def _each(verifier: TokenVerifier, tokens: list[str], n: int) -> None:
    for i in range(n):
        verifier.verify(tokens[i % len(tokens)])


def _verify(stored: str) -> None:
    passwords.verify_password("correct horse battery", stored)


def with_database(n: int) -> None:
    from harness.stack_fixtures import private_settings  # noqa: PLC0415
    from infra.postgres_server import Postgres  # noqa: PLC0415

    settings = private_settings()
    server = Postgres(settings)
    try:
        server.start()
        server.ensure_database("bench_auth")
        dsn = server.dsn("bench_auth")
        ring = KeyRing(SigningKey.generate(int(time.time())))
        issuer = TokenIssuer(ring, issuer=ISS, audience=AUD, ttl_s=900, clock=time.time)
        with psycopg.connect(dsn, autocommit=True) as conn:
            iam_projection.migrate(conn)
            conn.execute(
                "INSERT INTO iam_users (user_id, kind, login, created_at_ms, updated_at_ms) "
                "VALUES ('u-1', 'user', 'bench', 0, 0)"
            )
            conn.execute(
                "INSERT INTO iam_revoked_tokens (jti, user_id, expires_at_ms, revoked_at_ms) "
                "SELECT 'j' || g, 'u-1', 0, 0 FROM generate_series(1, 10000) g"
            )
            # u-1 is in 3 of 200 groups, among 1000 users with grants of their own
            conn.execute(
                "INSERT INTO iam_memberships (user_id, group_name, added_by, added_at_ms) "
                "SELECT 'u-' || (g % 1000), 'group-' || (g % 200), 'b', 0 "
                "FROM generate_series(1, 3000) g ON CONFLICT DO NOTHING"
            )
            conn.execute(
                "INSERT INTO iam_grants (subject, permission, granted_by, granted_at_ms) "
                "SELECT s, p, 'b', 0 FROM (SELECT 'group:group-' || g AS s FROM "
                "generate_series(0, 199) g UNION SELECT 'u-' || g FROM generate_series(0, 999) g) "
                "subjects, unnest(ARRAY['chain:read', 'data:read']) p"
            )
            token = issuer.issue(sub="u-1", inst="bench", groups=[], perms=[]).value
            verifier = TokenVerifier(
                ring,
                issuer=ISS,
                audience=AUD,
                clock=time.time,
                current_access=lambda claims: _database_access(conn, claims),
            )
            rate(
                "token verify + current access (1 query, before D74)",
                n,
                lambda: _each(verifier, [token], n),
            )
    finally:
        server.stop()
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="store_true", help="also measure the revocation query")
    parser.add_argument("-n", type=int, default=20_000, help="iterations per figure")
    args = parser.parse_args()
    pure(args.n)
    if args.db:
        with_database(max(1, args.n // 4))


if __name__ == "__main__":
    main()

"""Support for the gateway tests, browser tests and bench: a projected chain and tokens.

:class:`ChainFixture` fills an institution database through the real pipeline: a
:class:`SimChain` finalizes the tx log on the real broker, the real chain projection writes
PostgreSQL. :class:`Tokens` issues real Ed25519 JWTs with the IAM engineer's
:class:`~gateway.auth.tokens.TokenIssuer` and verifies them with its ``TokenVerifier``.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import psycopg
from psycopg_pool import ConnectionPool

from gateway.app import GatewayConfig, create_app
from gateway.auth.tokens import ALGORITHM, KeyRing, SigningKey, TokenIssuer, TokenVerifier
from gateway.context import Services
from gateway.submit import KafkaSubmitter
from harness.projections_support import SimChain, anchor, governance_workload
from ledger.keys import KeyPair
from projections import read
from projections.projector import ProjectorConfig, prepare

INSTITUTION = "inst-1"
ISSUER = f"pantheon:iam:{INSTITUTION}"
AUDIENCE = "pantheon:gateway"
ALL = ("chain:read", "chain:write", "admin")


class Tokens:
    """Real tokens of a test key ring, and a verifier of them."""

    def __init__(self) -> None:
        now = int(time.time())
        self.ring = KeyRing(SigningKey.generate(now))
        self.issuer = TokenIssuer(
            self.ring, issuer=ISSUER, audience=AUDIENCE, ttl_s=600, clock=time.time
        )
        self.verifier = TokenVerifier(self.ring, issuer=ISSUER, audience=AUDIENCE, clock=time.time)

    def token(
        self,
        perms: tuple[str, ...] = ("chain:read",),
        *,
        sub: str = "u-test",
        inst: str = INSTITUTION,
        ttl: int | None = None,
        key: Any = None,
        **claims: Any,
    ) -> str:
        """A token with ``perms``; ``ttl`` (may be negative), ``key`` or claims override."""
        if ttl is None and key is None and not claims:
            return self.issuer.issue(sub=sub, inst=inst, groups=["g"], perms=perms).value
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "inst": inst,
            "groups": ["g"],
            "perms": list(perms),
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + (600 if ttl is None else ttl),
            "jti": uuid.uuid4().hex,
        }
        payload.update(claims)
        signer = key if key is not None else self.ring.current
        return jwt.encode(
            payload, signer.private, algorithm=ALGORITHM, headers={"kid": signer.kid, "typ": "JWT"}
        )


class ChainFixture:
    """A SimChain, its projection into a fresh database, and (optionally) live blocks."""

    def __init__(self, bootstrap: str, server_dsn: str, workdir: Path) -> None:
        self.sim = SimChain(bootstrap, f"g{uuid.uuid4().hex[:8]}.", workdir, max_block_txs=10)
        self.raws, self.service = governance_workload(self.sim)
        self.sim.send(self.raws)
        self.sim.finalize()
        self.sim.send([anchor(self.sim, self.service, f"doc-{i}") for i in range(45)])
        self.height = self.sim.finalize()
        cfg = ProjectorConfig(
            institution=INSTITUTION,
            genesis=self.sim.genesis_path,
            bootstrap=bootstrap,
            prefix=self.sim.prefix,
            dsn=server_dsn,
            dbname=f"gw_{uuid.uuid4().hex[:10]}",
        )
        self.projection, self.runner = prepare(cfg)
        self.dsn = self.runner.dsn
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self.runner.run, args=(self.stop,), kwargs={"idle_timeout": 0.05}, daemon=True
        )
        self.thread.start()
        self.wait_projected(self.height)
        self.pool: ConnectionPool[Any] = ConnectionPool(
            self.dsn, min_size=1, max_size=8, open=True, kwargs={"autocommit": True}
        )
        self.submitter = KafkaSubmitter(bootstrap, self.sim.prefix)
        self.tokens = Tokens()
        self._live: threading.Thread | None = None
        self._live_stop = threading.Event()

    def wait_projected(self, height: int, timeout: float = 60.0) -> None:
        """Until ``height`` is *committed* in the database (the projection's in-memory
        height moves before its transaction commits, so readers could still see less)."""
        deadline = time.monotonic() + timeout
        while self._committed_height() < height:
            if time.monotonic() > deadline:
                raise AssertionError(f"projection at {self.projection.height}, want {height}")
            time.sleep(0.05)

    def _committed_height(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            found = read.summary(conn)
        return found.height if found is not None else -1

    def app(self, **config: Any) -> Any:
        services = Services(institution=INSTITUTION, pool=self.pool, submitter=self.submitter)
        cfg = GatewayConfig(institution=INSTITUTION, **config)
        return create_app(cfg, services, self.tokens.verifier, jwks=self.tokens.ring.jwks)

    def add_blocks(self, count: int = 1) -> int:
        """Finalize ``count`` more blocks of anchors; returns the new height."""
        with self.lock:
            for _ in range(count):
                self.sim.send([anchor(self.sim, self.service, f"live-{uuid.uuid4().hex[:12]}")])
                self.height = self.sim.finalize()
            return self.height

    def start_live(self, every_s: float = 1.0) -> None:
        """A new block every ``every_s`` seconds until :meth:`close`."""

        def loop() -> None:
            while not self._live_stop.wait(every_s):
                self.add_blocks(1)

        self._live = threading.Thread(target=loop, daemon=True)
        self._live.start()

    def gov(self, inst: str = INSTITUTION) -> KeyPair:
        return self.sim.gov(inst)

    def close(self) -> None:
        self._live_stop.set()
        if self._live is not None:
            self._live.join(30)
        self.stop.set()
        self.thread.join(30)
        self.runner.close()
        self.pool.close()
        self.submitter.close()
        self.sim.close()


class RecordingTransport:
    """An in-memory stand-in for an asyncio transport under uvicorn's HTTP protocol: keeps
    each ``write`` separately (a socket would merge or split them) and refuses a write after
    ``close``."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, _protocol: Any) -> None:
        pass

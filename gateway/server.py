"""``pantheon gateway``: one institution's GraphQL gateway and explorer under uvicorn.

``pantheon gateway --institution alpha --dsn DSN --bootstrap B [--prefix P] [--port 4004]``

* Reads the institution's projection database ``pantheon_<institution>`` (``--dbname`` to
  override) through a connection pool; the chain projector must be running.
* Users, logins and tokens come from :class:`gateway.iam.service.IamService` (master key from
  ``--master-key-file`` or the environment variable it documents; the key-encryption key files
  of D25 in ``--kek-dir``, by default the master key file's directory, else
  ``PANTHEON_IAM_KEK_DIR``); its IAM projection runs in this process with
  ``--iam-projection``, otherwise in the projector's.
* ``--iam-key-file PATH``: the institution's IAM SERVICE key (0600), registered on chain:
  it signs every IAM event (D21), at the height of the chain projected in the database.
  The in-process IAM projection believes only keys the certified chain names.
* ``--keystore PATH``: the institution's keystore (0600); its governance key signs the
  governance mutations (``proposeMember``, ``proposeRemoval``, ``castVote``). Without it
  they answer ``GOVERNANCE_KEY_MISSING``; a keystore readable by others is refused.
* Slow clients (:mod:`gateway.deadlines`): a request head must arrive within
  ``--head-timeout`` seconds (10) of the connection or of the previous answer, a request body
  within ``--body-timeout`` seconds (20) plus one second per ``--body-min-rate`` bytes
  (16 KiB) received; else ``408 REQUEST_TIMEOUT`` and the connection is closed. Idle
  keep-alive connections close after ``--keep-alive-timeout`` seconds (5).
* ``--workers N`` (default ``$PANTHEON_GATEWAY_WORKERS``, else 1): N worker processes
  share the port (:mod:`gateway.workers`, D46); the process started is their parent,
  and stopping it stops them all.
* Exit codes: 0 stopped, 1 a worker failed, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import uvicorn
from psycopg_pool import ConnectionPool

from gateway import objects as data_proxy
from gateway.app import GatewayConfig, create_app
from gateway.context import Services
from gateway.deadlines import (
    DEFAULT_BODY_MIN_RATE,
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEAD_TIMEOUT_S,
)
from gateway.governance import Governance, KeystoreRefused
from gateway.iam.kek import KEK_DIR_ENV
from gateway.iam.signing import IamSigner, KeyNotActive, chain_key_height, load_iam_key
from gateway.limits import Limits
from gateway.serving import GatewayProtocol, settle_heap
from gateway.submit import KafkaSubmitter
from gateway.workers import Supervisor, default_workers, listener, reserve
from ledger.errors import LedgerError
from ledger.genesis import Genesis
from ledger.keys import KeyPair
from projections import read
from projections.iam import ChainSigners, IamProjection, SignerPolicy
from projections.iam_certified import CertifiedSigners
from projections.projector import database_dsn, database_name
from runtime import logs
from runtime.cli_args import ConfigError, Parser
from runtime.startup import (
    read_genesis,
    refuse,
    require_broker,
    require_database,
)
from runtime.topics import DEFAULT_PREFIX

log = logging.getLogger("pantheon.gateway")
DEFAULT_PORT = 4004
EXIT_OK, EXIT_CONFIG = 0, 2


#: set to 1: the gateway serves chain data only with a token (as ``--private-chain``)
PRIVATE_CHAIN_ENV = "PANTHEON_PRIVATE_CHAIN"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pantheon gateway", description=__doc__.splitlines()[0])
    p.add_argument("--institution", required=True, help="institution id")
    p.add_argument("--dsn", required=True, help="PostgreSQL server connection string")
    p.add_argument("--dbname", default=None, help="database (default pantheon_<institution>)")
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="listen port (default 4004)")
    p.add_argument("--master-key-file", type=Path, default=None, help="IAM master key (0600)")
    p.add_argument(
        "--kek-dir",
        type=Path,
        default=None,
        help="directory of the IAM key-encryption key files (default: the master key file's "
        f"directory, else ${KEK_DIR_ENV})",
    )
    p.add_argument(
        "--iam-key-file",
        type=Path,
        default=None,
        help="the institution's IAM SERVICE key (0600 key file, registered on chain): signs "
        "every IAM event (D21); without it user management refuses every change",
    )
    p.add_argument(
        "--iam-projection",
        action="store_true",
        help="run the institution's IAM projection in this process",
    )
    p.add_argument(
        "--keystore",
        type=Path,
        default=None,
        help="institution keystore (0600) whose governance key signs governance mutations",
    )
    p.add_argument(
        "--genesis",
        type=Path,
        default=None,
        help="genesis.avro: the trust anchor of transaction outcomes (needed with --keystore), "
        "served at /genesis.avro for the explorer's certificate check",
    )
    p.add_argument(
        "--forwarded-allow-ips",
        default="",
        help="comma-separated addresses of reverse proxies whose X-Forwarded-For is believed "
        "(default: none; the peer address is the client's)",
    )
    p.add_argument(
        "--private-chain",
        action="store_true",
        default=os.environ.get(PRIVATE_CHAIN_ENV, "") not in ("", "0"),
        help="chain data only with a token (default: blocks, transactions and governance are "
        f"readable without a login; IAM and objects never are); or set ${PRIVATE_CHAIN_ENV}=1",
    )
    p.add_argument("--pool-size", type=int, default=10, help="database connections (per worker)")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="worker processes on the port (default $PANTHEON_GATEWAY_WORKERS, else 1)",
    )
    defaults = Limits()
    p.add_argument("--max-depth", type=int, default=defaults.max_depth)
    p.add_argument("--max-cost", type=int, default=defaults.max_cost)
    p.add_argument("--max-page-size", type=int, default=defaults.max_page_size)
    p.add_argument("--no-cache", action="store_true", help="no per-height response cache")
    p.add_argument(
        "--head-timeout",
        type=_positive,
        default=DEFAULT_HEAD_TIMEOUT_S,
        help="seconds a client has to send a request head (default 10; then 408 and close)",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds a client has to send a request body, plus 1 s per --body-min-rate "
        "bytes received (default 20; then 408 and close)",
    )
    p.add_argument(
        "--body-min-rate",
        type=int,
        default=DEFAULT_BODY_MIN_RATE,
        help="bytes per second of body that extend --body-timeout (default 16384)",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=5,
        help="seconds an idle keep-alive connection stays open (default 5)",
    )
    data_proxy.add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return p


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


class IamTrust(NamedTuple):
    """Who signs and who is believed on the IAM topic. Production: the chain (built in
    :func:`main`); processes run without a ledger pass a pinned policy in (tests)."""

    signers: SignerPolicy
    key_height: Callable[[], int]


def _signers(args: argparse.Namespace, trust: IamTrust | None) -> SignerPolicy:
    """A new signer policy for one IAM reader (each keeps its own verified chain): the
    chain tables believed only with certificates verified from ``--genesis`` (D75), else
    as written (a gateway started without the genesis; ``pantheon up`` always passes it)."""
    if trust is not None:
        return trust.signers
    if args.genesis is None:
        log.warning("no --genesis: the IAM key history is read from the database unverified")
        return ChainSigners()
    return CertifiedSigners(read_genesis(args.genesis), institution=args.institution)


def _no_key() -> int:
    raise KeyNotActive("this gateway has no IAM key (--iam-key-file): IAM changes are refused")


def _iam(args: argparse.Namespace, dsn: str, trust: IamTrust | None) -> Any:
    from gateway.auth.crypto import load_master_key  # noqa: PLC0415
    from gateway.iam.service import IamService  # noqa: PLC0415

    master = load_master_key(args.master_key_file)
    kek_dir = args.kek_dir or (
        args.master_key_file.parent
        if args.master_key_file is not None
        else Path(os.environ[KEK_DIR_ENV])
        if os.environ.get(KEK_DIR_ENV)
        else None
    )
    if kek_dir is None:
        raise ConfigError(f"give --kek-dir or set {KEK_DIR_ENV} (the master key is from the env)")
    if args.iam_key_file is None:
        signer = IamSigner(KeyPair.from_seed(bytes(32)), _no_key)  # never signs
    else:
        key = load_iam_key(args.iam_key_file)
        height = (
            trust.key_height
            if trust is not None
            else chain_key_height(dsn, args.institution, key.key_id)
        )
        signer = IamSigner(key, height)
    return IamService(
        bootstrap=args.bootstrap,
        dsn=dsn,
        institution=args.institution,
        master_key=master,
        prefix=args.prefix,
        kek_dir=kek_dir,
        signer=signer,
        shared_throttle=True,  # counts hold across workers, replicas and restarts (D46)
        signers=_signers(args, trust),
    )


def _iam_projection(
    args: argparse.Namespace, dsn: str, stop: threading.Event, signers: SignerPolicy
) -> None:
    from projections.objects import ObjectsProjection  # noqa: PLC0415
    from projections.runner import ProjectionRunner  # noqa: PLC0415

    runner = ProjectionRunner(
        dsn, args.bootstrap, IamProjection(args.institution, prefix=args.prefix, signers=signers)
    )
    threading.Thread(target=runner.run, args=(stop,), name="iam-projection", daemon=True).start()
    objects = ObjectsProjection(args.institution, prefix=args.prefix)  # the objects' rows (D23)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        objects.migrate(conn)
    threading.Thread(
        target=ProjectionRunner(dsn, args.bootstrap, objects).run,
        args=(stop,),
        name="objects-projection",
        daemon=True,
    ).start()


def _wait_for_iam_view(iam: Any, timeout_s: float = 60.0) -> None:
    """Listen once the IAM view has read its topic (D74): before that every authenticated
    request would wait and then be refused. A topic not read in time is logged and served
    anyway (user management answers ``iam_unavailable`` until it is)."""
    from gateway.iam.view import IamViewUnavailable  # noqa: PLC0415

    view = getattr(iam, "view", None)
    if view is None:
        return
    try:
        view.wait_ready(timeout_s)
    except IamViewUnavailable as exc:
        log.warning("serving before the IAM view caught up", extra={"why": str(exc)})


def _startup_checks(args: argparse.Namespace) -> None:
    """What the gateway cannot serve without: one line now, not a retry loop's log (D49)."""
    if args.genesis is not None:
        read_genesis(args.genesis)
    require_database(database_dsn(args.dsn, "postgres"))  # its own may come a moment later
    require_broker(args.bootstrap)


def main(argv: Sequence[str] | None = None, *, trust: IamTrust | None = None) -> int:
    """Entry point of ``pantheon gateway`` (and ``python -m gateway.server``). ``trust``
    replaces the chain as the IAM key authority (only for processes run without a ledger)."""
    args = build_parser().parse_args(argv)
    logs.configure(verbose=args.verbose)
    try:
        dbname = args.dbname or database_name(args.institution)
    except ConfigError as exc:
        print(f"pantheon gateway: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers < 1 or args.body_min_rate <= 0 or args.keep_alive_timeout <= 0:
        print(
            "pantheon gateway: error: --workers, rates and timeouts must be positive",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    dsn = database_dsn(args.dsn, dbname)
    try:
        _startup_checks(args)
    except ConfigError as exc:
        return refuse("gateway", exc)
    if args.workers == 1:
        return _serve(args, dsn, trust, listen=False, worker=0, ready=lambda: None)
    try:
        sock = reserve(args.host, args.port)
    except OSError as exc:
        print(f"pantheon gateway: error: cannot listen on {args.port}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"pantheon gateway: {args.institution} on http://{args.host}:{args.port}/ "
        f"({args.workers} workers)",
        flush=True,
    )
    with sock:
        return Supervisor(
            args.workers,
            lambda index, ready: _serve(args, dsn, trust, listen=True, worker=index, ready=ready),
        ).serve()


def _serve(
    args: argparse.Namespace,
    dsn: str,
    trust: IamTrust | None,
    *,
    listen: bool,
    worker: int,
    ready: Callable[[], None],
) -> int:
    """One gateway process until stopped (``listen``: worker ``worker`` of several, on a
    listening socket of its own)."""
    governance: Governance | None = None
    if args.keystore is not None:
        if args.genesis is None:
            print(
                "pantheon gateway: error: --keystore needs --genesis (outcomes of the "
                "transactions it signs are verified against it)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        try:
            governance = Governance.from_keystore(
                args.keystore,
                institution=args.institution,
                bootstrap=args.bootstrap,
                prefix=args.prefix,
                genesis=Genesis.decode(args.genesis.read_bytes()),
                validator_sets=read.validator_set_source(dsn),
            )
        except (KeystoreRefused, OSError, LedgerError) as exc:
            print(f"pantheon gateway: error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    stop = threading.Event()
    try:
        iam = _iam(args, dsn, trust)
    except Exception as exc:
        print(f"pantheon gateway: error: cannot start user management: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.iam_projection and worker == 0:  # one consumer, not one per worker
        _iam_projection(args, dsn, stop, _signers(args, trust))
    pool: ConnectionPool[Any] = ConnectionPool(
        dsn, min_size=2, max_size=args.pool_size, open=True, kwargs={"autocommit": True}
    )
    submitter = KafkaSubmitter(args.bootstrap, args.prefix)
    services = Services(institution=args.institution, pool=pool, accounts=iam, submitter=submitter)
    limits = Limits(
        max_depth=args.max_depth, max_cost=args.max_cost, max_page_size=args.max_page_size
    )
    config = GatewayConfig(
        institution=args.institution,
        limits=limits,
        cache_responses=not args.no_cache,
        body_timeout_s=args.body_timeout,
        body_min_rate=args.body_min_rate,
        public_chain=not args.private_chain,
        genesis_file=args.genesis,
    )
    try:
        proxy = data_proxy.from_args(
            args, pool, governance, kek=None if iam is None else iam.kek_store, events=iam
        )
    except Exception as exc:
        print(f"pantheon gateway: error: data access proxy: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    app = create_app(
        config, services, iam.verifier(), jwks=iam.jwks, governance=governance, objects=proxy
    )
    _wait_for_iam_view(iam)
    ready()
    settle_heap()
    sock = listener(args.host, args.port) if listen else None
    if sock is None:
        print(
            f"pantheon gateway: {args.institution} on http://{args.host}:{args.port}/", flush=True
        )
    try:
        server_config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="info" if args.verbose else "warning",
            access_log=False,
            http=GatewayProtocol.with_timeout(args.head_timeout),
            timeout_keep_alive=args.keep_alive_timeout,
            ws="websockets-sansio",
            lifespan="on",
            # X-Forwarded-For sets the client address that login throttling keys on: believe
            # it only from the reverse proxies named, never by default (uvicorn otherwise
            # trusts it from any loopback client, so a local user could pick its address).
            proxy_headers=bool(args.forwarded_allow_ips),
            forwarded_allow_ips=args.forwarded_allow_ips or None,
        )
        uvicorn.Server(server_config).run(sockets=None if sock is None else [sock])
    finally:
        stop.set()
        if governance is not None:
            governance.close()
        submitter.close()
        pool.close()
        iam.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

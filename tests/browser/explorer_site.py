"""The explorer's test site: one chain served by three gateways, and headless Chromium.

The gateway runs under uvicorn on a free port with the real IAM service (login) over a chain
projected by the real pipeline that grows a block every second; inst-1 hands its votes to a
new operator key on the way (AddOperator, then RemoveOperator of its genesis key).
Screenshots are saved to ``tests/browser/artifacts/``. The fixtures are registered by
``tests/browser/conftest.py`` (one site for the whole package).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from confluent_kafka.admin import AdminClient

from gateway.app import STATIC, GatewayConfig, create_app
from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.context import Services
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from harness.gateway_support import INSTITUTION, ChainFixture
from harness.projections_support import CHAIN_ID
from infra.postgres_server import Postgres
from ledger.governance import prop_key
from ledger.key_proofs import (
    add_operator_args,
    propose_member_args,
    register_identity_args,
    rotate_key_args,
)
from ledger.keys import KeyPair
from ledger.members import key_key
from ledger.tx import parse_tx
from projections.iam import IamProjection
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.iam_keys import pinned_signer, pinned_signers

HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
sync_api: Any = importlib.import_module("playwright.sync_api") if HAVE_PLAYWRIGHT else None

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"

MARKS = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is not installed (apt-get install chromium; ./dev test installs it)",
    ),
    pytest.mark.skipif(not HAVE_PLAYWRIGHT, reason="pip package playwright missing"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    """The app under uvicorn in a thread."""

    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="websockets-sansio",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@dataclass
class Site:
    """One chain served three ways: chain data public, private, and without GraphiQL's files."""

    url: str
    private_url: str
    fallback_url: str
    chain: ChainFixture
    genesis_hash: str
    #: heights of the AddOperator and RemoveOperator that hand inst-1's votes to a new key
    added_at: int
    removed_at: int
    new_operator: KeyPair
    #: height of the vote that passed an admission the chain refused (a key was taken)
    refused_at: int
    #: height of the RotateKey (with its proof of possession, D61) of inst-3's operator key
    rotated_at: int


@pytest.fixture(scope="package")
def site(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    chain = ChainFixture(bootstrap, postgres.dsn("postgres"), tmp_path_factory.mktemp("br"))
    prefix = chain.sim.prefix
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[INSTITUTION])
    master = MasterKey(bytes(range(32)))
    iam = IamService(
        bootstrap=bootstrap,
        dsn=chain.dsn,
        institution=INSTITUTION,
        master_key=master,
        prefix=prefix,
        password_params=FAST,
        signer=pinned_signer(INSTITUTION),
        signers=pinned_signers(INSTITUTION),
    )
    stop = threading.Event()
    runner = ProjectionRunner(
        chain.dsn,
        bootstrap,
        IamProjection(INSTITUTION, prefix=prefix, signers=pinned_signers(INSTITUTION)),
    )
    thread = threading.Thread(target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05})
    thread.start()
    served: list[Served] = []
    genesis = chain.sim.genesis_path
    bare = tmp_path_factory.mktemp("static") / "s"  # the static files without GraphiQL's
    shutil.copytree(STATIC, bare, ignore=shutil.ignore_patterns("vendor"))
    try:
        credential = ensure_setup_credential(chain.dsn, INSTITUTION, master)
        assert credential is not None
        root = iam.bootstrap_admin(credential, "root", "root-password")
        iam.grant(root, root, "chain:read")
        user = iam.create_user(root, "ada", PASSWORD, {"name": "Ada"})
        iam.grant(root, user, "chain:read")
        services = Services(
            institution=INSTITUTION, pool=chain.pool, accounts=iam, submitter=chain.submitter
        )
        for config in (
            GatewayConfig(institution=INSTITUTION, public_chain=True, genesis_file=genesis),
            GatewayConfig(institution=INSTITUTION, genesis_file=genesis),
            GatewayConfig(institution=INSTITUTION, public_chain=True, static_dir=bare),
        ):
            served.append(Served(create_app(config, services, iam.verifier())))
        chain.add_blocks(40)  # enough blocks for a few pages
        added_at, removed_at, new_operator = hand_over_operator(chain)
        refused_at = refuse_admission(chain)
        rotated_at = rotate_operator(chain)
        chain.start_live(1.0)
        yield Site(
            served[0].url,
            served[1].url,
            served[2].url,
            chain,
            chain.sim.genesis.hash().hex(),
            added_at,
            removed_at,
            new_operator,
            refused_at,
            rotated_at,
        )
    finally:
        for one in served:
            one.stop()
        stop.set()
        thread.join(30)
        iam.close()
        chain.close()


def hand_over_operator(chain: ChainFixture) -> tuple[int, int, KeyPair]:
    """inst-1 adds an operator key, then removes its genesis one: from then on only the new
    key signs inst-1's votes (an honest chain whose key set changed twice)."""
    sim, gov = chain.sim, chain.gov("inst-1")
    new = KeyPair.from_seed(os.urandom(32))
    old = sim.plan.keys["inst-1"][1][0]
    with chain.lock:
        sim.extra_operators[new.key_id] = new
        record = sim.machine.state.get(key_key(gov.key_id))
        assert record is not None
        nonce = record["next_nonce"]  # the workload's refused entries left gaps in sim's count
        add = add_operator_args(new, chain_id=CHAIN_ID, institution_id="inst-1")
        sim.send([sim.tx(gov, "AddOperator", add, nonce=nonce)])
        added = sim.finalize()
        remove = {"operator_key_id": old.key_id}
        sim.send([sim.tx(gov, "RemoveOperator", remove, nonce=nonce + 1)])
        removed = sim.finalize()
        chain.height = removed
    operators = sim.machine.validator_set().members["inst-1"]
    assert set(operators) == {new.key_id}, "the hand-over did not take effect on chain"
    for _ in range(2):
        chain.add_blocks(1)
    chain.wait_projected(chain.height)
    return added, removed, new


def refuse_admission(chain: ChainFixture) -> int:
    """inst-1 proposes inst-5, then inst-2 registers inst-5's operator key as a USER
    identity, then inst-2 and inst-3 vote yes: the vote that passes it finds the key taken, so
    the chain refuses the admission (proposal REJECTED, every entry OK). Returns the height
    of that vote's block."""
    sim = chain.sim
    g1, g2, g3 = (chain.gov(i) for i in ("inst-1", "inst-2", "inst-3"))
    newcomer, operator = KeyPair.from_seed(os.urandom(32)), KeyPair.from_seed(os.urandom(32))

    def nonce(key: KeyPair) -> int:
        record = sim.machine.state.get(key_key(key.key_id))
        assert record is not None
        return int(record["next_nonce"])

    with chain.lock:
        args = propose_member_args(newcomer, [operator], chain_id=CHAIN_ID, institution_id="inst-5")
        propose = sim.tx(g1, "ProposeMember", args, nonce=nonce(g1))
        sim.send([propose])
        sim.finalize()
        # the operator key's holder proves possession (D63): no third party could take it
        taken = register_identity_args(
            operator, chain_id=CHAIN_ID, institution_id="inst-2", kind="USER", label="taken"
        )
        sim.send([sim.tx(g2, "RegisterIdentity", taken, nonce=nonce(g2))])
        sim.finalize()
        vote = {"proposal_id": parse_tx(propose).tx_id, "approve": True}
        sim.send([sim.tx(g, "CastVote", vote, nonce=nonce(g)) for g in (g2, g3)])
        refused_at = chain.height = sim.finalize()
    proposal = sim.machine.state.get(prop_key(parse_tx(propose).tx_id))
    assert proposal is not None and proposal["status"] == "REJECTED", proposal
    assert "inst-5" not in sim.machine.validator_set().members
    for _ in range(2):
        chain.add_blocks(1)
    chain.wait_projected(chain.height)
    return refused_at


def rotate_operator(chain: ChainFixture) -> int:
    """inst-3's governance key rotates inst-3's operator key, with the new key's proof of
    possession (D61): from then on inst-3 votes with the new key, which only a replay that
    decodes the rotation knows. Returns the height of the rotation."""
    sim, gov = chain.sim, chain.gov("inst-3")
    new, old = KeyPair.from_seed(os.urandom(32)), sim.plan.keys["inst-3"][1][0]
    with chain.lock:
        sim.extra_operators[new.key_id] = new
        record = sim.machine.state.get(key_key(gov.key_id))
        assert record is not None
        args = rotate_key_args(
            new, chain_id=CHAIN_ID, key_id=old.key_id, old_public_key=old.public_key
        )
        sim.send([sim.tx(gov, "RotateKey", args, nonce=record["next_nonce"])])
        rotated_at = chain.height = sim.finalize()
    assert set(sim.machine.validator_set().members["inst-3"]) == {new.key_id}
    for _ in range(2):
        chain.add_blocks(1)
    chain.wait_projected(chain.height)
    return rotated_at


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
            browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def top_height(page: Any) -> int:
    text = page.locator("#latest-blocks tbody tr").first.locator("a").first.inner_text()
    return int(text.lstrip("#"))


def pin(page: Any, site: Site) -> None:
    """Pin the genesis hash as a user following `pantheon status` would (URL fragment)."""
    page.goto(site.url + "/#genesis=" + site.genesis_hash)
    sync_api.expect(page.locator("#latest-blocks tbody tr").first).to_be_visible()


def login(page: Any, url: str) -> None:
    page.goto(url + "/#/login")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).last.click()
    sync_api.expect(page.locator("#who")).to_have_text("Signed in as ada")

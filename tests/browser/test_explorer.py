"""The explorer and the playground in headless Chromium (Debian's ``/usr/bin/chromium``).

The gateway runs under uvicorn on a free port with the real IAM service (login) over a chain
projected by the real pipeline that grows a block every second. Screenshots are saved to
``tests/browser/artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from confluent_kafka.admin import AdminClient

from gateway.app import GatewayConfig, create_app
from gateway.auth.crypto import MasterKey
from gateway.auth.passwords import FAST
from gateway.context import Services
from gateway.iam.bootstrap import ensure_setup_credential
from gateway.iam.service import IamService
from harness.gateway_support import INSTITUTION, ChainFixture
from infra.postgres_server import Postgres
from projections.iam import IamProjection
from projections.runner import ProjectionRunner
from runtime.kafka_config import admin_config
from runtime.topics import ensure_topics
from tests.iam_keys import pinned_signer, pinned_signers

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

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"{CHROMIUM} is not installed (apt-get install chromium; ./dev test installs it)",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright missing")


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


@pytest.fixture(scope="module")
def site(
    bootstrap: str, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ChainFixture]]:
    chain = ChainFixture(bootstrap, postgres.dsn("postgres"), tmp_path_factory.mktemp("br"))
    prefix = chain.sim.prefix
    ensure_topics(AdminClient(admin_config(bootstrap)), prefix=prefix, institutions=[INSTITUTION])
    iam = IamService(
        bootstrap=bootstrap,
        dsn=chain.dsn,
        institution=INSTITUTION,
        master_key=MasterKey(bytes(range(32))),
        prefix=prefix,
        password_params=FAST,
        signer=pinned_signer(INSTITUTION),
    )
    stop = threading.Event()
    runner = ProjectionRunner(
        chain.dsn,
        bootstrap,
        IamProjection(INSTITUTION, prefix=prefix, signers=pinned_signers(INSTITUTION)),
    )
    thread = threading.Thread(target=runner.run, args=(stop,), kwargs={"idle_timeout": 0.05})
    thread.start()
    served = None
    try:
        credential = ensure_setup_credential(chain.dsn, INSTITUTION)
        assert credential is not None
        root = iam.bootstrap_admin(credential, "root", "root-password")
        iam.grant(root, root, "chain:read")
        user = iam.create_user(root, "ada", PASSWORD, {"name": "Ada"})
        iam.grant(root, user, "chain:read")
        services = Services(
            institution=INSTITUTION, pool=chain.pool, accounts=iam, submitter=chain.submitter
        )
        app = create_app(GatewayConfig(institution=INSTITUTION), services, iam.verifier())
        served = Served(app)
        chain.start_live(1.0)
        yield served.url, chain
    finally:
        if served is not None:
            served.stop()
        stop.set()
        thread.join(30)
        iam.close()
        chain.close()


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


def _top_height(page: Any) -> int:
    text = page.locator("#latest-blocks tbody tr").first.locator("a").first.inner_text()
    return int(text.lstrip("#"))


def test_login_live_blocks_block_tx_sender(site: tuple[str, ChainFixture], page: Any) -> None:
    url, _chain = site
    page.goto(url + "/")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password", exact=True).fill("wrong password!")
    page.get_by_role("button", name="Log in").click()
    sync_api.expect(page.locator("#login-error")).to_contain_text("Wrong username or password")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    sync_api.expect(page.locator("#latest-blocks tbody tr").first).to_be_visible()
    shot(page, "01-dashboard")
    first = _top_height(page)
    deadline = time.monotonic() + 20
    while _top_height(page) <= first:  # new blocks arrive over the subscription
        assert time.monotonic() < deadline, "no live block appeared"
        page.wait_for_timeout(200)
    sync_api.expect(page.locator("#status")).to_contain_text("Live")
    shot(page, "02-dashboard-live")

    page.locator("#latest-blocks a").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Block #")
    sync_api.expect(page.get_by_role("heading", name="Quorum certificate")).to_be_visible()
    shot(page, "03-block")
    page.locator("main table").first.locator("a[href^='#/tx/']").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Transaction")
    sync_api.expect(page.locator("dl.details")).to_contain_text("OK")
    shot(page, "04-transaction")
    sender = page.locator("dl.details a[href^='#/address/']").first
    key = sender.inner_text()
    sender.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Address")
    sync_api.expect(page.locator("dl.details")).to_contain_text(key)
    sync_api.expect(page.get_by_role("heading", name="Transactions sent")).to_be_visible()
    shot(page, "05-address")

    page.get_by_role("link", name="Institutions").click()
    sync_api.expect(page.locator("main table")).to_contain_text("inst-4")
    shot(page, "06-institutions")
    page.get_by_role("link", name="Proposals").click()
    sync_api.expect(page.locator("main table")).to_contain_text("newco")
    shot(page, "07-proposals")


def test_playground_loads_and_runs_a_query(site: tuple[str, ChainFixture], page: Any) -> None:
    url, _chain = site
    page.goto(url + "/graphql")
    sync_api.expect(page.get_by_role("button", name="Run")).to_be_visible()
    page.get_by_label("Query").fill(
        'mutation { login(username: "ada", password: "' + PASSWORD + '") { token error { code } } }'
    )
    page.get_by_role("button", name="Run").click()
    sync_api.expect(page.locator("#result")).to_contain_text('"token": "ey')
    page.get_by_label("Query").fill("{ blocks(first: 3) { edges { node { height hash } } } }")
    page.get_by_role("button", name="Run").click()
    sync_api.expect(page.locator("#result")).to_contain_text('"height"')
    assert re.search(r'"hash": "[0-9a-f]{64}"', page.locator("#result").inner_text())
    shot(page, "08-playground")


def test_artifacts_directory_is_writable() -> None:
    assert shutil.disk_usage(ARTIFACTS.parent).free > 0

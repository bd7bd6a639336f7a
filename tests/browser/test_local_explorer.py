"""The local explorer (decisions D55) in Chromium: this installation's code, the site's data.

``pantheon explorer``'s app runs in front of the site's public gateway; the page, loaded from
the local server only, verifies blocks before, at and after the site's operator change
against the pinned genesis, gets live blocks through the relayed subscription, and every
request it makes goes to the local server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from infra.explorer import create_app
from infra.explorer_forward import RemoteGateway
from tests.browser.explorer_site import MARKS, Served, Site, shot

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright missing")


@pytest.fixture(scope="module")
def local(site: Site) -> Iterator[str]:
    served = Served(create_app(RemoteGateway(site.url)))
    yield served.url
    served.stop()


def test_the_local_explorer_verifies_blocks_against_the_pin(
    site: Site, local: str, page: Any
) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(local + "/#genesis=" + site.genesis_hash)
    sync_api.expect(page.locator("#latest-blocks tbody tr").first).to_be_visible()
    live = page.locator("#status")  # the newBlock subscription, relayed by the local server
    sync_api.expect(live).to_have_text("Live: new blocks appear automatically", timeout=30_000)
    for height in (site.added_at - 1, site.removed_at + 1):
        page.goto(f"{local}/#/block/{height}")
        verdict = page.locator("#qc-verdict")
        sync_api.expect(verdict).to_have_attribute("data-verified", "yes", timeout=30_000)
        checks = page.locator("#qc-checks")
        sync_api.expect(checks).to_contain_text("the block names the validator set derived")
        sync_api.expect(checks).not_to_contain_text("✘")
    shot(page, "28-local-explorer-block-verified")
    assert page.evaluate("localStorage.getItem('pantheon.genesis')") == site.genesis_hash
    assert any(url.endswith("/genesis.avro") for url in requested)
    assert requested and all(url.startswith(local) for url in requested), requested

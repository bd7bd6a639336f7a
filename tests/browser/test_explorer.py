"""The explorer and the playground in headless Chromium (Debian's ``/usr/bin/chromium``).

The site (:mod:`tests.browser.explorer_site`): a chain projected by the real pipeline, a
block a second, served by three gateways. Screenshots are saved to
``tests/browser/artifacts/``.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

import pytest

from gateway.app import STATIC
from tests.browser.explorer_site import (
    ARTIFACTS,
    MARKS,
    PASSWORD,
    Site,
    login,
    pin,
    shot,
    top_height,
)

pytestmark = MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="pip package playwright missing")


def test_public_dashboard_live_block_tx_address(site: Site, page: Any) -> None:
    pin(page, site)  # no login: chain data is public on this gateway
    sync_api.expect(page.locator("#latest-blocks tbody tr").first).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Log in")).to_be_visible()
    sync_api.expect(page.locator("#latest-blocks thead")).to_contain_text("Accepted / entries")
    sync_api.expect(page.locator("#chart-tps rect").first).to_be_attached()
    sync_api.expect(page.locator("#chart-interval rect").first).to_be_attached()
    # senders by name, operations with their decoded arguments
    sync_api.expect(page.locator("#latest-transactions")).to_contain_text("svc (service, inst-1)")
    sync_api.expect(page.locator("#latest-transactions")).to_contain_text("data_id=live-")
    shot(page, "01-dashboard-public")
    first = top_height(page)
    deadline = time.monotonic() + 20
    while top_height(page) <= first:  # new blocks arrive over the subscription
        assert time.monotonic() < deadline, "no live block appeared"
        page.wait_for_timeout(200)
    sync_api.expect(page.locator("#status")).to_contain_text("Live")
    shot(page, "02-dashboard-live")

    page.locator("#latest-blocks a").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Block #")
    sync_api.expect(page.get_by_role("heading", name="Quorum certificate")).to_be_visible()
    sync_api.expect(page.locator("#qc-verdict")).to_have_attribute("data-verified", "yes")
    sync_api.expect(page.locator("#qc-checks")).to_contain_text("inst-1 operator")
    shot(page, "03-block-verified")
    page.locator("main table").first.locator("a[href^='#/tx/']").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Transaction")
    sync_api.expect(page.locator("dl.details").first).to_contain_text("OK")
    arguments = page.locator("#arguments")
    sync_api.expect(arguments).to_contain_text("data_id")
    sync_api.expect(arguments).to_contain_text("sha256")
    assert re.search(r"[0-9a-f]{64}", arguments.inner_text())
    shot(page, "04-transaction-arguments")
    sender = page.locator("dl.details a[href^='#/address/']").first
    sync_api.expect(sender).to_have_text("svc (service, inst-1)")
    sender.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("svc")
    sync_api.expect(page.get_by_role("heading", name="Transactions sent")).to_be_visible()
    shot(page, "05-address")


def test_paging_through_blocks_and_transactions(site: Site, page: Any) -> None:
    page.goto(site.url + "/#/blocks")
    sync_api.expect(page.locator("#blocks tbody tr").first).to_be_visible()
    assert page.locator("#blocks tbody tr").count() == 25
    top = int(page.locator("#blocks tbody tr a").first.inner_text().lstrip("#"))
    page.get_by_role("link", name="Older →").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text(f"#{top - 25}")
    sync_api.expect(page.get_by_role("link", name="← Newer").first).to_be_visible()
    shot(page, "06-blocks-page-2")
    while page.get_by_role("link", name="Older →").count():  # to the genesis' first block
        page.get_by_role("link", name="Older →").first.click()
        page.wait_for_timeout(100)
    sync_api.expect(page.locator("#blocks tbody tr").last).to_contain_text("#1")
    page.goto(site.url + "/#/txs")
    sync_api.expect(page.locator("#transactions tbody tr").first).to_be_visible()
    ids = page.locator("#transactions a[href^='#/tx/']").all_inner_texts()
    page.get_by_role("link", name="Older →").first.click()
    sync_api.expect(page.locator("#transactions a[href^='#/tx/']").first).not_to_have_text(ids[0])
    later = page.locator("#transactions a[href^='#/tx/']").all_inner_texts()
    assert later and not set(ids) & set(later)
    shot(page, "07-transactions-page-2")
    page.get_by_role("link", name="Older →").first.click()  # page 3, then back to page 2
    sync_api.expect(page.locator("#transactions a[href^='#/tx/']").first).not_to_have_text(later[0])
    page.get_by_role("link", name="← Newer").first.click()
    sync_api.expect(page.locator("#transactions a[href^='#/tx/']").first).to_have_text(later[0])


def test_governance_devices_anchors_batches(site: Site, page: Any) -> None:
    page.goto(site.url + "/")
    page.get_by_role("link", name="Institutions").click()
    # the dashboard's two tables stay until the page renders: wait for its heading first
    sync_api.expect(
        page.get_by_role("heading", level=1, name="Institutions and operators", exact=True)
    ).to_be_visible()
    sync_api.expect(page.locator("main table")).to_contain_text("inst-4")
    sync_api.expect(page.locator("main table")).to_contain_text("inst-4 operator")
    shot(page, "08-institutions")
    page.get_by_role("link", name="Proposals").click()
    sync_api.expect(
        page.get_by_role("heading", level=1, name="Proposals", exact=True)
    ).to_be_visible()
    sync_api.expect(page.locator("main table")).to_contain_text("newco")
    shot(page, "09-proposals")
    page.get_by_role("link", name="Devices").click()
    sync_api.expect(page.locator("#devices")).to_contain_text("sensor-1")
    sync_api.expect(page.locator("#devices")).to_contain_text("no (revoked)")
    shot(page, "10-devices")
    page.locator("#devices a", has_text="sensor-1").first.click()
    sync_api.expect(page.get_by_role("heading", name="Device records")).to_be_visible()
    page.get_by_role("button", name="Get proof").click()
    sync_api.expect(page.locator("#record-proof-result")).to_contain_text("No final record 0")
    shot(page, "11-device")
    page.get_by_role("link", name="Anchors").click()
    sync_api.expect(page.locator("#anchors")).to_contain_text("live-")
    shot(page, "12-anchors")
    page.locator("#anchors a[href^='#/anchor/']").first.click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Anchor live-")
    page.get_by_role("button", name="Get the proof").click()  # no data proxy on this gateway
    sync_api.expect(page.locator("#anchor-proof-result")).to_contain_text("no data access proxy")
    shot(page, "13-anchor")
    page.get_by_role("link", name="Layer 2").click()
    sync_api.expect(page.locator("#batches")).to_contain_text("b-1")
    shot(page, "14-l2-batches")
    icon = page.request.get(site.url + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_tampered_responses_show_as_unverified(site: Site, page: Any) -> None:
    tamper: dict[str, str] = {}

    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        block = (body.get("data") or {}).get("block") if isinstance(body, dict) else None
        if block and block["height"] != 3:  # the governance blocks it replays stay honest
            block = None
        if block and tamper.get("field") == "signature":
            sig = block["certificate"]["votes"][0]["signature"]
            flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
            block["certificate"]["votes"][0]["signature"] = flipped
        elif block and tamper.get("field") == "stateRoot":
            block["stateRoot"] = "00" * 32
        route.fulfill(response=response, json=body)

    pin(page, site)
    page.route("**/graphql", handle)
    for field in ("signature", "stateRoot"):
        tamper["field"] = field
        page.goto(site.url + "/#/block/3")
        page.reload()
        verdict = page.locator("#qc-verdict")
        sync_api.expect(verdict).to_have_attribute("data-verified", "no")
        sync_api.expect(verdict).to_contain_text("UNVERIFIED")
        expected = "signature does not verify" if field == "signature" else "do NOT hash"
        sync_api.expect(page.locator("#qc-checks")).to_contain_text(expected)
        shot(page, f"15-block-tampered-{field}")
    tamper["field"] = ""
    page.reload()
    sync_api.expect(page.locator("#qc-verdict")).to_have_attribute("data-verified", "yes")


def test_login_name_and_private_gateway(site: Site, page: Any) -> None:
    page.goto(site.private_url + "/")  # chain data private: the login form comes first
    sync_api.expect(page.locator("#login-error")).to_contain_text("only to logged-in users")
    page.get_by_label("Username").fill("ada")
    page.get_by_label("Password", exact=True).fill("wrong password!")
    page.get_by_role("button", name="Log in", exact=True).last.click()
    sync_api.expect(page.locator("#login-error")).to_contain_text("Wrong username or password")
    shot(page, "16-private-login")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Log in", exact=True).last.click()
    sync_api.expect(page.locator("#latest-blocks tbody tr").first).to_be_visible()
    sync_api.expect(page.locator("#who")).to_have_text("Signed in as ada")
    shot(page, "17-private-signed-in")
    page.get_by_role("button", name="Log out").click()
    sync_api.expect(page.locator("#login")).to_be_visible()


def _editor(page: Any, selector: str) -> Any:
    return page.locator(selector + " .CodeMirror").first


def test_graphiql_with_token_completion_and_docs(site: Site, page: Any) -> None:
    if not (STATIC / "vendor" / "graphiql.min.js").is_file():
        pytest.skip("GraphiQL's files are not installed (./dev install fetches them)")
    login(page, site.url)
    page.goto(site.url + "/graphql")
    sync_api.expect(page.locator(".graphiql-container")).to_be_visible()
    sync_api.expect(page.locator("#who")).to_have_text("Signed in as ada")
    # the token of the explorer's login is in the headers editor
    sync_api.expect(page.locator(".graphiql-editors")).to_contain_text("Bearer ey")
    page.evaluate(
        "q => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(q)",
        "{ me { sub permissions } summary { height } }",
    )
    page.locator(".graphiql-execute-button").click()
    response = page.locator(".graphiql-response")
    sync_api.expect(response).to_contain_text('"permissions"')
    sync_api.expect(response).to_contain_text("chain:read")
    shot(page, "18-graphiql-run")
    # completion from the introspected schema
    page.evaluate(
        "() => { const cm = document.querySelector('.graphiql-query-editor .CodeMirror')"
        ".CodeMirror; cm.setValue('{ \\n}'); cm.setCursor({line: 0, ch: 2}); cm.focus(); }"
    )
    page.keyboard.type("bloc")
    hints = page.locator(".CodeMirror-hints")
    sync_api.expect(hints).to_contain_text("blocks")
    shot(page, "19-graphiql-completion")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Show Documentation Explorer").click()
    docs = page.locator(".graphiql-doc-explorer")
    sync_api.expect(docs).to_contain_text("Query")
    docs.get_by_role("link", name="Query").first.click()
    sync_api.expect(docs).to_contain_text("l2Batches")
    shot(page, "20-graphiql-docs")
    # a subscription runs over the gateway's socket and streams new blocks into the result
    page.evaluate(
        "q => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(q)",
        "subscription { newBlock { height txCount } }",
    )
    page.locator(".graphiql-execute-button").click()
    sync_api.expect(response).to_contain_text('"newBlock"', timeout=20_000)
    shot(page, "21-graphiql-subscription")


def test_fallback_playground_keeps_its_layout(site: Site, page: Any) -> None:
    page.goto(site.fallback_url + "/graphql")  # GraphiQL's files absent: the minimal playground
    sync_api.expect(page.get_by_role("button", name="Run")).to_be_visible()
    page.get_by_label("Query").fill("{ blocks(first: 3) { edges { node { height hash } } } }")
    page.get_by_role("button", name="Run").click()
    sync_api.expect(page.locator("#result")).to_contain_text('"height"')  # anonymous here too
    page.get_by_role("button", name="Schema").click()
    sync_api.expect(page.locator("#result")).to_contain_text("type Query")
    width = page.locator("#query").bounding_box()["width"]
    assert width > 400, f"the query column collapsed to {width} px"
    shot(page, "22-fallback-playground-schema")


def test_artifacts_directory_is_writable() -> None:
    assert shutil.disk_usage(ARTIFACTS.parent).free > 0

"""The web explorer in a real browser: Debian's Chromium (/usr/bin/chromium, never a downloaded one) driven by
Playwright against a real server (``ledger serve``) loaded with the demo chain, on SQLite and PostgreSQL.

What a customs officer, a refiner and a cathode maker do: sign in, search, open a batch (its hidden downstream
included), see the verdict and its reason, verify an event and checkpoints in the browser, record a
determination, download a bundle and check it (and two tampered copies) in the browser, sign and submit a transfer
with a key file that never leaves the page, and meet a competitor's batch as "not found".

Screenshots of the main pages, at 1,280 px and on a phone, go to var/screenshots/<backend>/ (printed)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.client import LedgerClient
from ledger.domain.keys import SigningKey
from ledger.services.demo import DemoResult, play

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}

if not Path(CHROMIUM).exists():
    message = (
        f"{CHROMIUM} is missing, so the explorer's browser tests cannot run: `apt-get install -y chromium` "
        "(.ci/run installs it)"
    )
    if os.environ.get("LEDGER_REQUIRE_BROWSER") == "1":
        raise RuntimeError(message)
    print(f"\nSKIPPING tests/test_explorer_browser.py: {message}")
    pytest.skip(message, allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture
def browser(demo: DemoResult) -> Iterator[Browser]:
    """Started after the database, the server and the demo (Playwright's sync API runs an event loop in this
    thread while it is open, and the async database fixtures need theirs), closed before them."""
    with sync_playwright() as playwright:
        # root in a container has no user namespaces for Chromium's sandbox
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def demo(server: str, env: dict[str, str]) -> DemoResult:
    data = Path(env["LEDGER_DATA_DIR"])
    registrar = LedgerClient(
        server,
        token=(data / "registrar.token").read_text().strip(),
        actor="registrar",
        key=SigningKey.load(data / "registrar.key"),
    )
    return play(registrar, say=lambda _: None)


class Shots:
    def __init__(self, backend: str) -> None:
        self.folder = SCREENSHOTS / backend
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        print(f"\nexplorer screenshots: {self.folder}")

    def take(self, page: Page, name: str) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)


def _sign_in(browser: Browser, url: str, token: str, viewport: dict[str, int] = DESKTOP) -> Page:
    """A fresh browser context signed in with the keyboard: the labelled token field, then Enter."""
    page = browser.new_context(viewport=viewport, accept_downloads=True).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{url}/")
    field = page.get_by_label("API token")
    field.focus()
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_text("Signed in as")).to_be_visible()
    return page


def _outcome(page: Page, selector: str) -> tuple[str, str]:
    page.wait_for_selector(f"{selector}[data-outcome]", timeout=20_000)
    return str(page.get_attribute(selector, "data-outcome")), page.inner_text(selector)


def _fits(page: Page) -> None:
    """Nothing on the page is wider than the phone's screen (wide graphs and tables scroll in their own box)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide on a {PHONE['width']} px phone"


def test_the_explorer_in_chromium(
    server: str, env: dict[str, str], demo: DemoResult, browser: Browser, backend: str, tmp_path: Path
) -> None:
    shots = Shots(backend)
    gulf = demo.participants["gulf-refining"]
    monterrey = demo.participants["monterrey-cathodes"]
    assert gulf.token and monterrey.token and gulf.key

    # --- a refiner: search, a batch with its hidden downstream, an event verified in the browser ---------------
    page = _sign_in(browser, server, gulf.token)
    shots.take(page, "home")
    page.get_by_role("searchbox").first.fill("lioh-tx-0001")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server}/ui/batches/lioh-tx-0001")
    expect(page.locator("#batch-custodian")).to_contain_text("gulf-refining")
    expect(page.locator("#batch-status")).to_have_text("split")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_contain_text("transform signed by gulf-refining")
    expect(timeline).to_contain_text("Corpus Christi lithium hydroxide refinery, Texas, US")
    upstream = page.locator("svg.lineage").first
    expect(upstream).to_contain_text("spod-qc-0001")
    expect(upstream).to_contain_text("spod-wa-0001")
    # downstream, lioh-tx-0001-a went to the cathode maker, who made cam-mx-0001: not the refiner's to see
    downstream = page.locator("svg.lineage").nth(1)
    expect(downstream).to_contain_text("lioh-tx-0001-a")
    expect(downstream).to_contain_text("lioh-tx-0001-b")
    expect(downstream).to_contain_text("1 hidden batch")
    expect(downstream).not_to_contain_text("cam-mx-0001")
    shots.take(page, "batch")

    page.locator("ol.timeline a[href^='/ui/events/']").first.click()
    outcome, text = _outcome(page, "#event-result")
    assert outcome == "pass", text
    assert "signed by the pinned key" in text
    expect(page.locator("#event-checks")).to_contain_text("the inclusion proof")
    expect(page.locator("#event-checks")).to_contain_text("signature by key")
    shots.take(page, "event")

    # a competitor's batch (the cobalt chain) is "not found", exactly as the API answers this token
    response = page.goto(f"{server}/ui/batches/pcam-mx-0002")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text("batch 'pcam-mx-0002' does not exist")
    page.goto(f"{server}/ui/search?q=pcam-mx-0002")
    expect(page.get_by_role("alert")).to_contain_text("Nothing found")

    # participants and facilities: roles, ownership, keys, attestations on a timeline
    page.goto(f"{server}/ui/participants/nordic-cobalt")
    expect(page.locator("dl.facts")).to_contain_text("CN: equity 0.3")
    expect(page.locator("#attestations")).to_contain_text("rmap conformant by")
    expect(page.locator("#attestations")).to_contain_text("valid on")
    page.get_by_role("link", name="Kokkola", exact=False).first.click()
    expect(page.locator("h1")).to_contain_text("nordic-kokkola-refinery")
    expect(page.locator("#attestations")).to_contain_text("rmap conformant")
    shots.take(page, "facility")

    # --- the log: the latest checkpoint and a consistency proof, verified in the browser ----------------------
    page.goto(f"{server}/ui/log")
    outcome, text = _outcome(page, "#checkpoint-result")
    assert outcome == "pass", text
    rows = page.locator("#signature-lines tbody tr")
    expect(rows.first).to_contain_text("verified: the pinned log key")
    page.locator("#verify-consistency").click()
    outcome, text = _outcome(page, "#consistency-result")
    assert outcome == "pass", text
    shots.take(page, "log")

    # --- sign a transfer in the browser with the refiner's key file, which is never uploaded ------------------
    key_file = tmp_path / "gulf-refining.key"
    gulf.key.save(key_file)
    uploads: list[str] = []
    page.on("request", lambda r: uploads.append(r.post_data or "") if r.method == "POST" else None)
    page.goto(f"{server}/ui/record?batch=lioh-tx-0001-b")
    page.get_by_label("Your key file").set_input_files(str(key_file))
    outcome, text = _outcome(page, "#key-status")
    assert outcome == "pass", text
    form = page.locator("#transfer-form")
    auth = {"Authorization": f"Bearer {gulf.token}"}
    head = httpx.get(f"{server}/v1/batches/lioh-tx-0001-b", headers=auth).json()["head"]
    expect(form.get_by_label("Previous event (the batch's head)")).to_have_value(head)
    # the demo's story runs a few minutes ahead of the clock: the transfer happens a second after its parent
    parent_time = datetime.fromisoformat(
        httpx.get(f"{server}/v1/events/{head}", headers=auth).json()["timestamp"]
    )
    page.get_by_label("Time of the event").fill((parent_time + timedelta(seconds=1)).isoformat())
    form.get_by_label("To participant").fill("monterrey-cathodes")
    form.get_by_label("To facility (optional)").fill("monterrey-cam-plant")
    form.get_by_label("Route: countries in order, comma separated").fill("US, MX")
    form.get_by_role("button", name="Sign and submit").click()
    outcome, text = _outcome(page, "#transfer-form [data-result]")
    assert outcome == "pass", text
    assert "transfer accepted" in text
    shots.take(page, "record")
    seed = key_file.read_text()
    assert uploads and not any(json.loads(seed)["private_key"] in body for body in uploads)
    state = httpx.get(
        f"{server}/v1/batches/lioh-tx-0001-b", headers={"Authorization": f"Bearer {gulf.token}"}
    ).json()
    assert state["status"] == "in_transit" and state["receiver"] == "monterrey-cathodes"
    page.locator("#transfer-form [data-result] a").click()
    outcome, text = _outcome(page, "#event-result")
    assert outcome == "pass", text
    assert not page.errors, page.errors  # type: ignore[attr-defined]

    # --- the cathode maker: the verdict and its reason first, then record it --------------------------------
    maker = _sign_in(browser, server, monterrey.token)
    # it receives the batch the refiner sent, signing in its own page with its own key file
    maker.goto(f"{server}/ui/batches/lioh-tx-0001-b")
    expect(maker.locator("#batch-status")).to_have_text("in_transit")
    maker.get_by_role("link", name="Record an event on it").click()
    maker_key = tmp_path / "monterrey-cathodes.key"
    assert monterrey.key is not None
    monterrey.key.save(maker_key)
    maker.get_by_label("Your key file").set_input_files(str(maker_key))
    maker.get_by_label("Time of the event").fill((parent_time + timedelta(seconds=2)).isoformat())
    receive = maker.locator("#receive-form")
    expect(receive.get_by_label("Mass received (grams)")).to_have_value("1500000")
    receive.get_by_label("At facility").fill("monterrey-cam-plant")
    receive.get_by_role("button", name="Sign and submit").click()
    outcome, text = _outcome(maker, "#receive-form [data-result]")
    assert outcome == "pass" and "receive accepted" in text, text
    state = httpx.get(
        f"{server}/v1/batches/lioh-tx-0001-b", headers={"Authorization": f"Bearer {monterrey.token}"}
    ).json()
    assert (state["status"], state["custodian"], state["facility"]) == (
        "at_facility",
        "monterrey-cathodes",
        "monterrey-cam-plant",
    )

    maker.goto(f"{server}/ui/batches/pcam-mx-0002/eligibility")
    verdict = maker.locator("#verdict")
    expect(verdict).to_contain_text(
        "Not eligible because of a foreign entity of concern: participant nordic-cobalt"
    )
    expect(maker.locator("#reasons li.fail").first).to_contain_text("foreign-entity-of-concern")
    expect(maker.locator("svg.share")).to_have_attribute(
        "aria-label", "qualifying share 100.00 % against a threshold of 60.00 %"
    )
    shots.take(maker, "eligibility")
    maker.get_by_role("button", name="Record this determination in the log").click()
    expect(maker.get_by_text("Recorded: the determination is log entry")).to_be_visible()
    outcome, text = _outcome(maker, "#event-result")
    assert outcome == "pass", text
    # its envelope declares values of other participants: withheld from the maker, whose browser still checks
    # that the event is in the log; the registrar's browser also checks the ledger's signature (below)
    expect(maker.locator("#event-checks")).to_contain_text("the envelope is withheld from you")
    determination_page = maker.url
    maker.goto(f"{server}/ui/batches/pcam-mx-0002")
    expect(maker.locator("table").last).to_contain_text("not eligible")

    # --- the registrar: download a bundle, check it and two tampered copies in the browser -------------------
    registrar = _sign_in(
        browser, server, (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    )
    registrar.goto(determination_page)
    outcome, text = _outcome(registrar, "#event-result")
    assert outcome == "pass", text
    expect(registrar.locator("#event-checks")).to_contain_text("signature by the ledger's log key verifies")
    registrar.goto(f"{server}/ui/batches/cam-mx-0001/eligibility")
    expect(registrar.locator("#verdict")).to_contain_text("Eligible: qualifying share 100.00 %")
    with registrar.expect_download() as download:
        registrar.locator("#download-bundle").click()
    bundle_path = tmp_path / "bundle.json"
    download.value.save_as(bundle_path)
    bundle = json.loads(bundle_path.read_text())
    assert bundle["format"] == "mineral-ledger/bundle/v1" and bundle["batch"] == "cam-mx-0001"

    registrar.goto(f"{server}/ui/bundle-check")
    registrar.get_by_label("Bundle file (JSON)").set_input_files(str(bundle_path))
    outcome, text = _outcome(registrar, "#bundle-result")
    assert outcome == "pass", text
    assert (
        f"{len(bundle['entries'])} entries, every signature, inclusion proof and the checkpoint verify"
        in text
    )
    shots.take(registrar, "bundle-good")

    # a signature changed: the page names the entry and says the envelope was altered
    forged = copy.deepcopy(bundle)
    entry = forged["entries"][3]
    signature = entry["envelope"]["signatures"][0]
    signature["sig"] = ("B" if signature["sig"][0] != "B" else "C") + signature["sig"][1:]
    _check_bad(
        registrar, tmp_path / "forged.json", forged, f"(log index {entry['log_index']}): the signature by key"
    )
    # a payload changed: its event id changes, so it is not in the log the checkpoint commits to
    moved = copy.deepcopy(bundle)
    entry = moved["entries"][1]
    payload = json.loads(__import__("base64").b64decode(entry["envelope"]["payload"]))
    payload["timestamp"] = payload["timestamp"].replace(":", ":", 1)[:-1] + (
        "1" if payload["timestamp"][-1] != "1" else "2"
    )
    entry["envelope"]["payload"] = (
        __import__("base64")
        .b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())
        .decode()
    )
    _check_bad(registrar, tmp_path / "moved.json", moved, "entries[1]")
    shots.take(registrar, "bundle-tampered")

    # --- on a phone: the main pages fit the screen -------------------------------------------------------------
    phone = _sign_in(browser, server, monterrey.token, PHONE)
    for path, name in (
        ("/ui/batches/cam-mx-0001", "phone-batch"),
        ("/ui/batches/pcam-mx-0002/eligibility", "phone-eligibility"),
        ("/ui/log", "phone-log"),
    ):
        phone.goto(f"{server}{path}")
        _fits(phone)
        shots.take(phone, name)
    for signed_in in (page, maker, registrar, phone):
        assert not signed_in.errors, signed_in.errors  # type: ignore[attr-defined]


def _check_bad(page: Page, path: Path, document: dict[str, Any], named: str) -> None:
    path.write_text(json.dumps(document))
    page.get_by_label("Bundle file (JSON)").set_input_files(str(path))
    outcome, text = _outcome(page, "#bundle-result")
    assert outcome == "fail", text
    assert named in text, text

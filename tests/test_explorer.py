"""The web explorer's routes without a browser: sign-in and its cookie, CSRF, the API's read scoping, HTML error
pages, the strict form bodies at the edge, and the JSON API left unchanged (tests/test_explorer_browser.py drives
the same pages in Chromium)."""

from __future__ import annotations

import re

import httpx
import msgspec
import pytest

from api.controllers.web import SESSION_COOKIE, csrf_for, headline
from api.security import EXPLORER_CSP
from ledger.client import envelope_for
from ledger.domain import events as ev
from tests.support import TS, Chain, Member


def _client(chain: Chain) -> httpx.AsyncClient:
    """A browser of its own (its own cookie jar) on the same app."""
    return httpx.AsyncClient(transport=chain.world.client._transport, base_url="http://127.0.0.1")


async def _sign_in(browser: httpx.AsyncClient, member: Member) -> str:
    page = await browser.get("/")
    assert page.status_code == 401 and "Sign in" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    response = await browser.post(
        "/ui/signin", data={"csrf": csrf.group(1), "token": member.token, "next": "/"}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    return csrf_for(member.token)


async def _scenario(chain: Chain) -> None:
    """The miner extracts two batches and ships one to the refiner, which splits it."""
    await chain.send(chain.extract("ore-1", value=ev.Money(amount="1000.00", currency="USD")), chain.miner)
    await chain.send(chain.extract("ore-2"), chain.miner)
    await chain.ship("ore-1", chain.miner, chain.refiner, chain.refinery, 1_000_000)
    split = ev.Split(
        actor=chain.refiner.id,
        timestamp=TS,
        batch="ore-1",
        parent=await chain.head("ore-1"),
        outputs=[ev.SplitPart(id="ore-1-a", mass_g=600_000), ev.SplitPart(id="ore-1-b", mass_g=400_000)],
    )
    await chain.send(split, chain.refiner)


async def test_sign_in_sets_an_http_only_strict_cookie_and_sign_out_clears_it(chain: Chain) -> None:
    async with _client(chain) as browser:
        page = await browser.get("/")
        assert page.status_code == 401
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == EXPLORER_CSP[1].decode()
        assert "ledger_signin=" in page.headers["set-cookie"]
        assert "HttpOnly" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None

        # a wrong token: the sign-in page again, saying why, and no session
        bad = await browser.post(
            "/ui/signin", data={"csrf": csrf.group(1), "token": "tok_0000000000000000_nope", "next": "/"}
        )
        assert bad.status_code == 401 and "sign-in failed" in bad.text
        assert SESSION_COOKIE not in browser.cookies

        session_csrf = await _sign_in(browser, chain.refiner)
        cookie = browser.cookies[SESSION_COOKIE]
        assert cookie == chain.refiner.token
        home = await browser.get("/")
        assert home.status_code == 200 and f"Signed in as <strong>{chain.refiner.id}</strong>" in home.text
        assert f'name="csrf" value="{session_csrf}"' in home.text

        # the cookie's flags
        again = await browser.get("/")  # the page sets nothing; sign in once more to read the header
        assert "set-cookie" not in again.headers
        page = await browser.post("/ui/signout", data={"csrf": "wrong"})
        assert page.status_code == 403 and "CSRF" in page.text
        out = await browser.post("/ui/signout", data={"csrf": session_csrf})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert (await browser.get("/")).status_code == 401

    async with _client(chain) as browser:
        page = await browser.get("/")
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        response = await browser.post(
            "/ui/signin", data={"csrf": token.group(1), "token": chain.miner.token, "next": "//evil.example/"}
        )
        assert response.headers["location"] == "/"  # only this site's paths
        flags = [
            part.strip().lower()
            for part in response.headers["set-cookie"].split(", ledger_signin")[0].split(";")
        ]
        assert f"{SESSION_COOKIE}={chain.miner.token}".lower() in flags
        assert {"httponly", "samesite=strict", "path=/"} <= set(flags)
        assert "secure" not in flags  # plain http on loopback; https sets it (X-Forwarded-Proto too)
    # anywhere but loopback the cookies are Secure, even when no proxy says the browser used HTTPS
    async with httpx.AsyncClient(
        transport=chain.world.client._transport, base_url="http://ledger.example"
    ) as far:
        page = await far.get("/")
        assert "secure" in page.headers["set-cookie"].lower()


async def test_sign_in_refuses_a_form_without_its_csrf_cookie(chain: Chain) -> None:
    async with _client(chain) as browser:
        response = await browser.post("/ui/signin", data={"csrf": "guess", "token": chain.miner.token})
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
        assert "CSRF token is missing or wrong" in response.text
        assert SESSION_COOKIE not in browser.cookies


async def test_pages_follow_the_api_read_scoping_and_errors_are_html(chain: Chain) -> None:
    await _scenario(chain)
    async with _client(chain) as browser:
        await _sign_in(browser, chain.refiner)
        held = await browser.get("/ui/batches/ore-1")
        assert held.status_code == 200
        assert (
            'into <a href="/ui/batches/ore-1-a">ore-1-a</a> (600 kg), <a href="/ui/batches/ore-1-b">ore-1-b</a> (400 kg)'
            in held.text
        )
        # the miner's other batch is not the refiner's to read: "not found", as the API says to its token
        other = await browser.get("/ui/batches/ore-2")
        api = await chain.world.client.get("/v1/batches/ore-2", headers=chain.refiner.headers)
        assert api.status_code == other.status_code == 404
        assert other.headers["content-type"].startswith("text/html")
        assert "batch &#39;ore-2&#39; does not exist" in other.text
        assert api.json()["detail"] == "batch 'ore-2' does not exist"
        assert (await browser.get("/ui/batches/ore-2/eligibility")).status_code == 404
        assert (await browser.get("/ui/batches/ore-2/bundle")).status_code == 404
        # search: a readable batch, a participant, a facility; the unreadable batch is "nothing found"
        for query, target in (
            ("ore-1", "/ui/batches/ore-1"),
            (chain.miner.id, f"/ui/participants/{chain.miner.id}"),
            (chain.refinery, f"/ui/facilities/{chain.refinery}"),
        ):
            found = await browser.get("/ui/search", params={"q": query})
            assert found.status_code == 303 and found.headers["location"] == target
        missing = await browser.get("/ui/search", params={"q": "ore-2"})
        assert missing.status_code == 404 and "Nothing found" in missing.text
        event = await browser.get("/ui/search", params={"q": "sha256:" + "0" * 64})
        assert event.status_code == 303
        assert (await browser.get(event.headers["location"])).status_code == 404

    # the miner sees ore-1 and its upstream, but the refiner's split outputs only as hidden nodes
    async with _client(chain) as browser:
        await _sign_in(browser, chain.miner)
        page = await browser.get("/ui/batches/ore-1")
        assert page.status_code == 200
        assert "ore-1-a" not in page.text and "ore-1-b" not in page.text
        assert (
            "2 hidden batches" in page.text
            and "2 downstream batches belong to flows you may not see" in page.text
        )


async def test_the_json_api_ignores_the_session_cookie(chain: Chain) -> None:
    await _scenario(chain)
    async with _client(chain) as browser:
        await _sign_in(browser, chain.refiner)
        response = await browser.get("/v1/batches/ore-1")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_recording_a_determination_needs_the_session_csrf_token(chain: Chain) -> None:
    await _scenario(chain)
    before = await chain.world.count_events()
    async with _client(chain) as browser:
        csrf = await _sign_in(browser, chain.refiner)
        form = {"profile": "ptz-2026", "at": "2026-09-02"}
        refused = await browser.post("/ui/batches/ore-1-a/determinations", data={**form, "csrf": "0" * 64})
        assert refused.status_code == 403 and "CSRF" in refused.text
        elsewhere = await browser.post(
            "/ui/batches/ore-1-a/determinations",
            data={**form, "csrf": csrf},
            headers={"origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403 and "https://evil.example" in elsewhere.text
        assert await chain.world.count_events() == before  # nothing was logged

        recorded = await browser.post("/ui/batches/ore-1-a/determinations", data={**form, "csrf": csrf})
        assert recorded.status_code == 303, recorded.text
        location = recorded.headers["location"]
        assert location.startswith("/ui/events/sha256:") and location.endswith("?recorded=1")
        assert await chain.world.count_events() == before + 1
        page = await browser.get(location)
        assert page.status_code == 200 and "Recorded: the determination is log entry" in page.text
        batch = await browser.get("/ui/batches/ore-1-a")
        assert "ptz-2026 v" in batch.text and "2026-09-02" in batch.text


async def test_a_form_body_is_checked_at_the_edge(chain: Chain) -> None:
    async with _client(chain) as browser:
        response = await browser.post(
            "/ui/signin",
            content=b"csrf=x&token=tok_%00",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        assert "control character" in response.json()["detail"]
        # outside the explorer a form body is still not JSON
        api = await browser.post(
            "/v1/events", content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert api.status_code == 400 and "JSON" in api.json()["detail"]


async def test_the_signing_forms_submit_through_the_session_with_the_csrf_header(chain: Chain) -> None:
    await _scenario(chain)
    async with _client(chain) as browser:
        csrf = await _sign_in(browser, chain.refiner)
        transfer = ev.Transfer(
            actor=chain.refiner.id,
            timestamp=TS,
            batch="ore-1-a",
            parent=await chain.head("ore-1-a"),
            to=chain.maker.id,
            route=[
                ev.RouteLeg(country="US", customs_control=False),
                ev.RouteLeg(country="MX", customs_control=True),
            ],
        )
        body = msgspec.json.encode(envelope_for(transfer, chain.refiner.key))
        refused = await browser.post(
            "/ui/api/events", content=body, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 403 and refused.json()["code"] == "csrf-rejected"
        accepted = await browser.post(
            "/ui/api/events", content=body, headers={"content-type": "application/json", "x-csrf-token": csrf}
        )
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["status"] == "accepted"
        assert (await chain.batch("ore-1-a"))["status"] == "in_transit"
        # another participant's event is refused as the API refuses it: the session's participant submits
        theirs = ev.Extract(
            actor=chain.miner.id,
            timestamp=TS,
            facility=chain.mine,
            batch=ev.NewBatch(id="ore-9", mineral="lithium", form="concentrate", mass_g=5),
        )
        wrong = await browser.post(
            "/ui/api/events",
            content=msgspec.json.encode(envelope_for(theirs, chain.miner.key)),
            headers={"content-type": "application/json", "x-csrf-token": csrf},
        )
        assert wrong.status_code == 403, wrong.text


async def test_static_assets_are_served_by_the_app(chain: Chain) -> None:
    async with _client(chain) as browser:
        for name, kind in (
            ("verify.js", "text/javascript"),
            ("explorer.js", "text/javascript"),
            ("explorer.css", "text/css"),
        ):
            response = await browser.get(f"/ui/static/{name}")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(kind)
        missing = await browser.get("/ui/no-such-page")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
        assert "the explorer has no page at /ui/no-such-page" in missing.text
        page = await browser.get("/ui/bundle-check")  # works without a session: nothing leaves the browser
        assert page.status_code == 200
        assert "https://" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page.text)


def test_the_headline_names_a_foreign_entity_of_concern_first() -> None:
    class Reason(msgspec.Struct):
        code: str
        outcome: str
        message: str

    class Threshold(msgspec.Struct):
        share: str
        why: str = ""

    class Summary(msgspec.Struct):
        verdict: str
        deciding_reasons: list[Reason]
        qualifying_share_percent: str
        threshold: Threshold | None
        foreign_entity_of_concern: bool

    feoc = Summary(
        "not_eligible",
        [
            Reason("share-meets-threshold", "pass", "qualifying share 1 (100.00 %) >= required 0.60"),
            Reason("foreign-entity-of-concern", "fail", "participant x has 0.3 of its equity held by CN"),
        ],
        "100.00",
        Threshold("0.6"),
        True,
    )
    assert headline(feoc) == (
        "Not eligible because of a foreign entity of concern: participant x has 0.3 of its equity held by CN."
    )
    short = Summary(
        "not_eligible",
        [Reason("share-below-threshold", "fail", "qualifying share 1/4 (25.00 %) < required 0.60")],
        "25.00",
        Threshold("3/5"),
        False,
    )
    assert headline(short) == (
        "Not eligible: qualifying share 1/4 (25.00 %) < required 0.60 "
        "(qualifying share 25.00 % against a threshold of 60.00 %)."
    )
    assert headline(Summary("eligible", [], "75.00", Threshold("0.6"), False)) == (
        "Eligible: qualifying share 75.00 % against a threshold of 60.00 %."
    )


async def test_an_unexpected_failure_is_an_html_page_and_logged(
    chain: Chain, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*_: object, **__: object) -> None:
        raise RuntimeError("disk on fire")

    async with _client(chain) as browser:
        await _sign_in(browser, chain.miner)
        monkeypatch.setattr(chain.world.services.log, "latest_checkpoint", broken)
        page = await browser.get("/")
        assert page.status_code == 500 and page.headers["content-type"].startswith("text/html")
        assert "the server failed to build this page; nothing was changed" in page.text
        assert "disk on fire" not in page.text
        assert any("unhandled error on GET /" in r.getMessage() for r in caplog.records)

"""The API documentation works offline on a real server: Swagger UI at /schema and ReDoc at /schema/redoc load only
files the app serves itself, the CSP lets them run, and the OpenAPI document declares the bearer scheme on the
protected operations (none on the public ones) and the problem+json documents the server really returns."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/log/checkpoint", "/v1/log/checkpoints", "/v1/log/checkpoints/{size}",
          "/v1/log/key", "/v1/log/proofs/inclusion", "/v1/log/proofs/consistency", "/v1/log/tile/{path}",
          "/.well-known/did.json", "/v1/credentials/status/revocation"}  # fmt: skip


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.urls.append((tag, value))


def test_swagger_and_redoc_load_only_local_files(server: str) -> None:
    for page, needs in (
        ("/schema", {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"}),
        ("/schema/redoc", {"redoc.standalone.js"}),
    ):
        response = httpx.get(f"{server}{page}")
        assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
        parser = _Assets()
        parser.feed(response.text)
        assert {url.rsplit("/", 1)[-1] for _, url in parser.urls} >= needs
        for tag, url in parser.urls:
            assert url.startswith("/schema/static/"), (page, tag, url)  # local: no CDN, no Google Fonts
            asset = httpx.get(f"{server}{url}")
            assert asset.status_code == 200 and len(asset.content) > 500, url
            expected = {"script": "text/javascript", "link": ("text/css", "image/png")}[tag]
            assert asset.headers["content-type"].startswith(expected), url
        assert "https://" not in response.text.split("<body")[0]
        csp = response.headers["content-security-policy"]
        assert "script-src 'self' 'unsafe-inline'" in csp and "style-src 'self' 'unsafe-inline'" in csp
        assert "http" not in csp  # no third-party origin is allowed, none is needed
    vendored = Path(__file__).parent.parent / "api" / "docs_assets"
    served = httpx.get(f"{server}/schema/static/redoc/redoc.standalone.js").content
    assert served == (vendored / "redoc" / "redoc.standalone.js").read_bytes()
    for licence in ("swagger-ui/LICENSE", "swagger-ui/NOTICE", "redoc/LICENSE"):
        assert (vendored / licence).stat().st_size > 50


def test_openapi_declares_bearer_auth_and_problem_documents(server: str, env: dict[str, str]) -> None:
    document = httpx.get(f"{server}/schema/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert "Validation Exception" not in json.dumps(document)  # Litestar's own error shape is gone
    operations = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            operations += 1
            if path in PUBLIC:
                assert "security" not in operation, path
                assert "401" not in operation["responses"], path
            else:
                assert path.startswith(("/v1/", "/epcis/")) and operation["security"] == [{"bearer": []}], (
                    path
                )
                assert {"401", "403", "422", "429"} <= set(operation["responses"]), path
            errors = {k: v for k, v in operation["responses"].items() if k[0] in "45"}
            assert {"400", "404", "500", "503"} <= set(errors), path
            for status, response in errors.items():
                assert response["content"] == {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (path, status)
    assert operations > 40

    # what the server really answers matches the documented problem: without a token, and with one
    token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    for headers, status, code in (
        ({}, 401, "unauthenticated"),
        ({"Authorization": f"Bearer {token}"}, 404, "not-found"),
    ):
        answer = httpx.get(f"{server}/v1/batches/nope", headers=headers)
        assert answer.status_code == status and answer.headers["content-type"] == "application/problem+json"
        body = answer.json()
        assert set(problem["required"]) <= set(body), body
        assert body["status"] == status and body["code"] == code and body["type"].endswith("/" + code)
        assert all(isinstance(body[name], str) for name in ("type", "title", "detail", "code"))


def test_every_content_type_names_its_charset_once(server: str) -> None:
    for path in ("/schema", "/schema/redoc", "/schema/static/swagger-ui/swagger-ui.css", "/v1/log/key",
                 "/v1/log/checkpoint", "/healthz", "/schema/openapi.json", "/nope"):  # fmt: skip
        content_type = httpx.get(f"{server}{path}").headers.get_list("content-type")
        assert len(content_type) == 1, (path, content_type)
        assert content_type[0].lower().count("charset") <= 1, (path, content_type)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (.ci/run installs it)")
def test_the_pages_render_in_a_browser_under_the_csp(server: str, tmp_path: Path) -> None:
    """Headless Chromium, offline by construction (every URL is the server's): Swagger UI draws its operations and
    ReDoc its paths, and the CSP blocks nothing they need (ReDoc's optional logo from its CDN is blocked and
    ReDoc then leaves it out, which is the point of serving offline)."""
    for page, drawn in (
        ("/schema", 'class="opblock opblock-get"'),
        ("/schema/redoc", "/v1/batches/{batch_id}/lineage"),
    ):
        done = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", "--dump-dom", f"{server}{page}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert drawn in done.stdout, (page, done.stdout[-2000:])
        blocked = [
            line
            for line in done.stderr.splitlines()
            if "Content Security Policy" in line and "cdn.redoc.ly/redoc/logo-mini.svg" not in line
        ]
        assert blocked == [], blocked

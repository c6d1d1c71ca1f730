"""What a newcomer meets first: the README's Python client example runs as written (a key file named by a plain
string), and the repository explains itself (no link in README.md or docs/ points outside the repository)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from ledger.domain.keys import SigningKey
from ledger.errors import InvalidInput
from tests.support import ledger

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _python_client_example() -> str:
    section = README.split("## Python client", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_client_example_runs(
    server: str, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example names its key file relative to where it runs
    public = json.loads(ledger(env, "keygen", "--json", "--out", str(tmp_path / "acme.key")).stdout)[
        "public_key"
    ]
    ledger(
        env, "participant", "add", "--url", server, "--id", "acme-mining", "--name", "Acme Mining",
        "--role", "miner", "--country", "CA", "--public-key", public,
    )  # fmt: skip
    token = json.loads(
        ledger(env, "token", "issue", "--json", "--url", server, "--participant", "acme-mining").stdout
    )
    code = _python_client_example()
    assert 'SigningKey.load("acme.key")' in code and "http://127.0.0.1:8000" in code
    namespace = {"TOKEN": token["token"]}
    exec(compile(code.replace("http://127.0.0.1:8000", server), "README.md", "exec"), namespace)
    client = namespace["client"]
    assert client.key.public_key_b64 == public and client.actor == "acme-mining"


def test_key_files_by_string_or_path(tmp_path: Path) -> None:
    key = SigningKey.generate()
    key.save(str(tmp_path / "a.key"))
    assert SigningKey.load(str(tmp_path / "a.key")) == key == SigningKey.load(tmp_path / "a.key")
    with pytest.raises(InvalidInput, match="does not exist"):
        SigningKey.load("no-such.key")
    with pytest.raises(InvalidInput, match="cannot read key file"):
        SigningKey.load(os.fspath(tmp_path))  # a directory


def test_the_repository_links_only_inside_itself() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(documents) >= 3
    for document in documents:
        text = document.read_text()
        assert "/work/" not in text and "DESIGN.md" not in text and "STYLE.md" not in text, document
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                continue  # a web page, not a file
            resolved = (document.parent / target).resolve()
            assert resolved.is_relative_to(ROOT) and resolved.exists(), (document.name, target)

"""The explorer's in-browser verifier (api/web/static/verify.js) against the server's own Python implementations
and an independent RFC 8785 encoder, in Debian's Chromium: RFC 9162 inclusion and consistency proofs for every
index and pair of sizes up to 33 leaves (and a corrupted copy of each), C2SP signed checkpoints with a witness
line, DSSE signing with a key file, and canonical JSON."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.domain.dsse import Envelope, Signature, verify_envelope_signature
from ledger.domain.keys import SigningKey
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, sign_checkpoint, sign_note, verifier_key

CHROMIUM = "/usr/bin/chromium"
VERIFY_JS = Path(__file__).resolve().parent.parent / "api" / "web" / "static" / "verify.js"
ORIGIN = "http://127.0.0.1:9"  # loopback: a secure context, so WebCrypto is there; never reached (routed)

if not Path(CHROMIUM).exists():
    message = f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)"
    if os.environ.get("LEDGER_REQUIRE_BROWSER") == "1":
        raise RuntimeError(message)
    print(f"\nSKIPPING tests/test_explorer_verify_js.py: {message}")
    pytest.skip(message, allow_module_level=True)

from playwright.sync_api import Page, Route, sync_playwright  # noqa: E402

N = 33


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    html = f"<!doctype html><title>verify.js</title><script>{VERIFY_JS.read_text()}</script>"

    def serve(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=html)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page()
        tab.route(f"{ORIGIN}/**", serve)
        tab.goto(f"{ORIGIN}/")
        assert tab.evaluate("window.isSecureContext && typeof LedgerVerify === 'object'")
        yield tab
        browser.close()


def _tree() -> tuple[list[bytes], dict[tuple[int, int], bytes]]:
    leaves = [merkle.leaf_hash(hashlib.sha256(str(i).encode()).digest()) for i in range(N)]
    _, completed = merkle.append(merkle.Frontier.empty(), leaves)
    return leaves, {(level, index): digest for level, index, digest in completed}


def _flip(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 1]) + digest[1:]


RUN_INCLUSION = """async (cases) => {
  const V = LedgerVerify;
  const out = [];
  for (const [leaf, index, size, proof, root] of cases) {
    try {
      await V.verifyInclusion(V.fromHex(leaf, "leaf"), index, size, proof.map((h) => V.fromHex(h, "p")), V.fromHex(root, "root"));
      out.push("pass");
    } catch (error) { out.push(error instanceof V.VerifyError ? "fail" : "error: " + error); }
  }
  return out;
}"""

RUN_CONSISTENCY = """async (cases) => {
  const V = LedgerVerify;
  const out = [];
  for (const [first, second, proof, a, b] of cases) {
    try {
      await V.verifyConsistency(first, second, proof.map((h) => V.fromHex(h, "p")), V.fromHex(a, "a"), V.fromHex(b, "b"));
      out.push("pass");
    } catch (error) { out.push(error instanceof V.VerifyError ? "fail" : "error: " + error); }
  }
  return out;
}"""


def test_inclusion_proofs_verify_as_the_server_builds_them(page: Page) -> None:
    leaves, nodes = _tree()
    good: list[list[Any]] = []
    bad: list[list[Any]] = []
    for size in range(1, N + 1):
        root = merkle.root_hash(leaves[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, nodes)
            good.append([leaves[index].hex(), index, size, [h.hex() for h in proof], root.hex()])
            if proof:
                bad.append(
                    [
                        leaves[index].hex(),
                        index,
                        size,
                        [_flip(proof[0]).hex(), *(h.hex() for h in proof[1:])],
                        root.hex(),
                    ]
                )
            bad.append([_flip(leaves[index]).hex(), index, size, [h.hex() for h in proof], root.hex()])
            if size > 1:  # the same proof for another leaf position, or a proof one hash short
                bad.append(
                    [leaves[index].hex(), (index + 1) % size, size, [h.hex() for h in proof], root.hex()]
                )
    assert len(good) == N * (N + 1) // 2
    assert page.evaluate(RUN_INCLUSION, good) == ["pass"] * len(good)
    assert page.evaluate(RUN_INCLUSION, bad) == ["fail"] * len(bad)


def test_consistency_proofs_verify_as_the_server_builds_them(page: Page) -> None:
    leaves, nodes = _tree()
    roots = [merkle.root_hash(leaves[:size]) for size in range(N + 1)]
    good: list[list[Any]] = []
    bad: list[list[Any]] = []
    for second in range(0, N + 1):
        for first in range(0, second + 1):
            proof = merkle.consistency_proof(first, second, nodes)
            merkle.verify_consistency(
                first, second, proof, roots[first], roots[second]
            )  # the reference agrees
            good.append([first, second, [h.hex() for h in proof], roots[first].hex(), roots[second].hex()])
            if proof:
                bad.append(
                    [first, second, [h.hex() for h in proof[:-1]], roots[first].hex(), roots[second].hex()]
                )
                corrupted = [*(h.hex() for h in proof[:-1]), _flip(proof[-1]).hex()]
                bad.append([first, second, corrupted, roots[first].hex(), roots[second].hex()])
            if 0 < first < second:
                bad.append(
                    [first, second, [h.hex() for h in proof], _flip(roots[first]).hex(), roots[second].hex()]
                )
                bad.append(
                    [first, second, [h.hex() for h in proof], roots[first].hex(), _flip(roots[second]).hex()]
                )
    assert page.evaluate(RUN_CONSISTENCY, good) == ["pass"] * len(good)
    results = page.evaluate(RUN_CONSISTENCY, bad)
    assert results == ["fail"] * len(bad)


def test_signed_checkpoints_with_a_witness_line(page: Page) -> None:
    log_key = SigningKey.generate()
    witness = SigningKey.generate()
    name = "ledger.example/log"
    checkpoint = Checkpoint(name, 12, hashlib.sha256(b"root").digest())
    note = sign_checkpoint(checkpoint, name, log_key.seed)
    # a witness cosigns: its line follows the log's (c2sp.org/signed-note), and is listed, not checked
    cosigned = note + sign_note(checkpoint.body(), "witness.example", witness.seed).split("\n\n")[1]
    vkey = verifier_key(name, log_key.public_key)
    opened = page.evaluate(
        """async ([note, vkey]) => {
          const c = await LedgerVerify.openCheckpoint(note, vkey);
          return {origin: c.origin, size: c.size, root: LedgerVerify.hex(c.rootHash),
                  lines: c.signatures.map((s) => [s.name, s.keyId, !!s.verified])};
        }""",
        [cosigned, vkey],
    )
    assert opened["origin"] == name and opened["size"] == 12
    assert opened["root"] == hashlib.sha256(b"root").hexdigest()
    log_id = vkey.split("+")[1]
    witness_id = verifier_key("witness.example", witness.public_key).split("+")[1]
    assert opened["lines"] == [[name, log_id, True], ["witness.example", witness_id, False]]

    refusals = page.evaluate(
        """async (cases) => {
          const out = [];
          for (const [note, vkey] of cases) {
            try { await LedgerVerify.openCheckpoint(note, vkey); out.push("opened"); }
            catch (error) { out.push(error.message); }
          }
          return out;
        }""",
        [
            [cosigned.replace("\n12\n", "\n13\n"), vkey],  # the size changed after signing
            [cosigned, verifier_key(name, witness.public_key)],  # another key under the log's name
            [cosigned.replace("— ", "- ", 1), vkey],
        ],
    )
    assert refusals[0].startswith(
        "the checkpoint does not verify: signature line 1 by key ledger.example/log+"
    )
    assert refusals[0].endswith("does not verify over the note text")
    assert refusals[1].startswith(
        "the checkpoint does not verify: the note has no signature by key ledger.example/log+"
    )
    assert "signature line 1 does not start with an em dash and a space" in refusals[2]


def test_events_signed_in_the_browser_are_what_the_server_accepts(page: Page, tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "key.json"
    key.save(path)
    event = {
        "kind": "transfer",
        "actor": "gulf-refining",
        "timestamp": "2026-09-26T10:00:00-05:00",
        "batch": "lioh-tx-0001-b",
        "parent": "sha256:" + "ab" * 32,
        "to": "monterrey-cathodes",
        "route": [{"country": "US", "customs_control": False}, {"country": "MX", "customs_control": True}],
        "to_facility": "monterrey-cam-plant",
    }
    signed = page.evaluate(
        """async ([keyFile, event]) => {
          const signer = await LedgerVerify.loadKeyFile(keyFile);
          return {keyId: signer.keyId, envelope: await LedgerVerify.signEvent(event, signer)};
        }""",
        [path.read_text(), event],
    )
    assert signed["keyId"] == key.key_id
    envelope = Envelope(
        payloadType=signed["envelope"]["payloadType"],
        payload=signed["envelope"]["payload"],
        signatures=[Signature(**s) for s in signed["envelope"]["signatures"]],
    )
    payload = base64.b64decode(envelope.payload)
    assert payload == canonical_bytes(event) == rfc8785.dumps(event)
    verify_envelope_signature(envelope, payload, key.public_key, key.key_id)  # raises if it does not verify
    decoded = ev.decode_payload(payload)  # canonical and valid for its kind, as the server requires
    assert isinstance(decoded, ev.Transfer) and decoded.to == "monterrey-cathodes"
    # the browser checks the same envelope, and refuses it once a byte of the payload changes
    checks = page.evaluate(
        """async ([envelope, publicKey]) => {
          const V = LedgerVerify;
          const key = V.b64decode(publicKey, "key");
          const ok = await V.verifyEnvelope(envelope, key);
          const bad = {...envelope, payload: V.b64encode(new TextEncoder().encode(atob(envelope.payload).replace("MX", "CN")))};
          try { await V.verifyEnvelope(bad, key); return [ok, "accepted"]; } catch (e) { return [ok, e.message]; }
        }""",
        [signed["envelope"], key.public_key_b64],
    )
    assert checks == [
        key.key_id,
        f"the signature by key {key.key_id} does not verify: the envelope was altered",
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, "x"], "é": '\u2028\n"\\\u0001', "€": 9007199254740991},
        {"z": {"y": {"x": []}}, "A": "", "a": -1, "\U0001f600": "astral \U0001f600 key"},
        {"10": 0, "9": "keys sort by UTF-16 code units", "\ufb01": 1, "\U00010000": 2},
    ],
)
def test_canonical_json_matches_rfc_8785(page: Page, value: dict[str, Any]) -> None:
    text = page.evaluate("(value) => LedgerVerify.canonical(value)", value)
    assert text.encode() == rfc8785.dumps(value)
    assert json.loads(text) == value

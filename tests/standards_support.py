"""Independent checks of what the ledger exports: GS1's reference event hash generator (PyPI) and the epcis2.js
validator (npm, run with the machine's Node.js)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

JS = Path(__file__).parent / "js"


def reference_hashes(document: dict[str, Any]) -> list[str]:
    """The event hashes GS1's reference implementation computes for every event of an EPCIS document."""
    from epcis_event_hash_generator import hash_generator, json_to_py

    document = copy.deepcopy(document)
    if document["type"] == "EPCISQueryDocument":  # the reference reads capture documents
        body = document["epcisBody"]["queryResults"]["resultsBody"]
        document = {**document, "type": "EPCISDocument", "epcisBody": body}
    events = json_to_py.event_list_from_epcis_document_json(document)
    prehashes = hash_generator.derive_prehashes_from_events(events)
    assert len(prehashes) == len(events[2]), "the reference implementation could not read every event"
    return list(hash_generator.calculate_hashes_from_pre_hashes(prehashes))


def _node_modules() -> None:
    """Install the pinned validators (as ``make test`` does) if they are not there yet."""
    if (JS / "node_modules" / ".installed").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: cannot install tests/js (run `make test`)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True)
    (JS / "node_modules" / ".installed").touch()


def epcis2js(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """epcis2.js's ``validateEpcisDocument`` on each document: ``{"success": bool, "errors": [...]}``. Skips,
    loudly, where Node.js is not installed."""
    node = shutil.which("node")
    if node is None:
        message = "Node.js is not on PATH: EPCIS documents were NOT validated with epcis2.js (CI has node)"
        warnings.warn(message, stacklevel=2)
        pytest.skip(message)
    _node_modules()
    done = subprocess.run(
        [node, str(JS / "validate_epcis.js")],
        input=json.dumps(documents),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results

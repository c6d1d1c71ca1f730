"""Process-wide tuning for the ledger's long-running and bulk commands (the server, the audit)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic garbage collector's thresholds in a server or an audit: a batch of 1,000 envelopes allocates a few
hundred thousand objects that live until the response, and at Python's default (700 allocations) the collector
ran every few envelopes, each time walking every young object: an eighth of the ingest path's CPU. Reference counting frees
almost everything; the collector only has to find cycles, and these thresholds let it run about 70 times less
often."""


_tuned = False


def tune_garbage_collector() -> None:
    """For a server or an audit: move what start-up allocated (modules, the app, the settings) out of the collector's
    sight for good (``gc.freeze``), and collect young objects less often (:data:`GC_THRESHOLDS`). Once per process:
    a process that starts several apps (tests, an embedding) freezes only what the first start left."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

"""Prometheus metrics of one process, and what ``GET /metrics`` shows.

Counters and histograms live in prometheus_client's default registry. With ``ledger serve --workers N`` every
worker writes them to files in PROMETHEUS_MULTIPROC_DIR (set by ``ledger serve``), and a scrape, whichever worker
answers it, adds them up (prometheus_client's multiprocess mode). Gauges of the ledger as a whole (integration lag,
the latest checkpoint's age) are read from the database at scrape time; the connection pool's use is the
answering process's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter(
    "ledger_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "ledger_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENTS = Counter(
    "ledger_events_total",
    "Submitted envelopes by outcome (accepted, duplicate, rejected) and, for rejections, the problem code",
    ["outcome", "reason"],
)
GROUP_COMMIT = Histogram(
    "ledger_group_commit_events",
    "Envelopes in one write transaction (group commit takes every submission waiting for the write lock)",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
STAGE_SECONDS = Counter(
    "ledger_submit_stage_seconds_total",
    "Seconds spent per submission stage (decode, signature checks, waiting for and holding the write lock)",
    ["stage"],
)


@dataclass(frozen=True)
class LogGauges:
    """The ledger-wide figures a scrape reads from the database."""

    sequenced: int
    checkpoint_size: int
    checkpoint_age_seconds: float | None
    pool_checked_out: int
    pool_size: int
    witness_sizes: dict[str, int] = field(default_factory=dict)
    """Per configured witness, the largest checkpoint size it has cosigned (0: none yet)."""
    latest_cosignatures: int = 0
    witness_quorum: int = 0
    guard_refusing: bool = False


class _LogCollector(Collector):
    def __init__(self, gauges: LogGauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        g = self._gauges
        yield GaugeMetricFamily("ledger_log_entries", "Entries sequenced into the log", value=g.sequenced)
        yield GaugeMetricFamily(
            "ledger_log_unintegrated_entries",
            "Entries accepted but not yet covered by a signed checkpoint (integration lag)",
            value=max(0, g.sequenced - g.checkpoint_size),
        )
        if g.checkpoint_age_seconds is not None:
            yield GaugeMetricFamily(
                "ledger_log_checkpoint_age_seconds",
                "Seconds since the latest checkpoint was signed",
                value=g.checkpoint_age_seconds,
            )
        yield GaugeMetricFamily(
            "ledger_db_pool_connections_in_use",
            "Database connections checked out of the answering process's pool",
            value=g.pool_checked_out,
        )
        yield GaugeMetricFamily(
            "ledger_db_pool_size", "Connections the answering process's pool keeps", value=g.pool_size
        )
        cosigned = GaugeMetricFamily(
            "ledger_witness_cosigned_size",
            "Largest checkpoint size each witness has cosigned",
            labels=["witness"],
        )
        for name, size in sorted(g.witness_sizes.items()):
            cosigned.add_metric([name], size)
        yield cosigned
        yield GaugeMetricFamily(
            "ledger_checkpoint_cosignatures",
            "Witness cosignatures collected on the latest checkpoint",
            value=g.latest_cosignatures,
        )
        yield GaugeMetricFamily(
            "ledger_witness_quorum",
            "Cosignatures a checkpoint needs to count as witnessed",
            value=g.witness_quorum,
        )
        yield GaugeMetricFamily(
            "ledger_log_guard_refusing",
            "1 while the log refuses to sign a tree that does not extend its last signed checkpoint",
            value=1 if g.guard_refusing else 0,
        )


def exposition(gauges: LogGauges) -> bytes:
    """The text exposition format of every metric: this process's (or all workers') plus the ledger's gauges."""
    registry: CollectorRegistry | Iterable[Collector]
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Default())
    registry.register(_LogCollector(gauges))
    return generate_latest(registry)


class _Default(Collector):
    """The default registry's metrics, inside a per-scrape registry that also holds the gauges."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()

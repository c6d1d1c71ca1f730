"""Structured logs: one JSON object per line on standard error, for every logger (ours, uvicorn's, the rest).

A line holds ``time`` (UTC, RFC 3339), ``level``, ``logger``, ``message`` and the fields a caller passed in
``extra`` (request id, participant, route, status, duration); an exception adds ``exception``. Nothing else of a
record is written, so a log line can only carry what was put there on purpose: never a token, a key or a
declared value.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}
_encoder = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encoder.encode(line).decode()


def lean_records() -> None:
    """No thread, process or multiprocessing names in this process's log records: :class:`JsonFormatter` never
    writes them, and gathering them is a good part of the cost of a record, which a server pays for every request
    (``logging``'s documented optimisation flags)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """``logging.config.dictConfig`` for ``ledger serve``: every logger through :class:`JsonFormatter`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure(level: str = "INFO") -> None:
    """JSON lines on standard error for a process that is not ``ledger serve`` (which passes the same config)."""
    lean_records()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def litestar_logging_config() -> Any:
    """Litestar's logging configuration with :class:`JsonFormatter` on every handler (its default writes plain text
    lines and would take over the root logger), logging unexpected exceptions always."""
    from litestar.logging.config import LoggingConfig

    lean_records()  # in every API process: uvicorn's workers build the app without calling configure()
    return LoggingConfig(
        formatters={"json": {"()": JsonFormatter}},
        handlers={
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        loggers={"litestar": {"level": "INFO", "handlers": [], "propagate": True}},
        root={"handlers": ["stderr"], "level": "INFO"},
        log_exceptions="always",
    )

"""Conventions every ``ledger`` command shares: the connection options (``--url``, ``--token``), the signer
options (``--as``, ``--key-file``), the log's verifier key (``--log-key``), ``--json``, progress bars, and how an
unreachable server or a problem answer becomes one line on stderr instead of a traceback.

Option names mean one thing everywhere: ``--key-file`` is a participant's private key file (from ``ledger
keygen``), ``--log-key`` the log's public verifier key (``name+hash+base64`` or a file holding it). ``--key`` was
both once; it survives only as a deprecated spelling of ``--log-key``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import httpx
import msgspec

from ledger.client import ClientError, LedgerClient
from ledger.domain.keys import SigningKey
from ledger.services.views import SubmitResultView

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_FAILED = 1
"""A problem answer, bad input, a failed check."""
EXIT_UNREACHABLE = 3
"""The server could not be reached at all (nothing was sent or changed)."""


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


# --- errors --------------------------------------------------------------------------------------------------


def problem_line(exc: ClientError) -> str:
    """One line from a problem document: status, title, detail and the ledger's stable code."""
    problem = exc.problem
    title = str(problem.get("title") or "").strip()
    detail = " ".join(str(problem.get("detail") or "").split())
    code = problem.get("code")
    text = f"{exc.status} {title}" if title else str(exc.status)
    if detail and detail != title:
        text += f": {detail}"
    if code:
        text += f" [{code}]"
    return text


def unreachable_line(exc: httpx.TransportError) -> str:
    """One line for a server that did not answer, with the fix."""
    try:
        url = str(exc.request.url.copy_with(path="/", query=None)).rstrip("/")
    except RuntimeError:  # no request attached
        url = "the server"
    if isinstance(exc, httpx.ConnectError):
        cause = str(exc).lower()
        reason = "connection refused" if "refused" in cause or "errno 111" in cause else f"{exc}".strip()
        if "name or service not known" in cause or "nodename" in cause:
            reason = "unknown host"
    elif isinstance(exc, httpx.TimeoutException):
        reason = "timed out"
    else:
        reason = str(exc).strip() or type(exc).__name__
    return f"cannot reach {url}: {reason}; is `ledger serve` running? set --url or LEDGER_URL"


def report(exc: BaseException) -> NoReturn:
    """Exit with one line for the errors a command line meets talking to a server."""
    if isinstance(exc, ClientError):
        fail(problem_line(exc))
    if isinstance(exc, httpx.TransportError):
        fail(unreachable_line(exc), EXIT_UNREACHABLE)
    raise exc


@contextmanager
def reported() -> Iterator[None]:
    """Around a block that talks to a server: problem answers and unreachable servers end the command with one
    line (``main`` does the same for every command; this serves commands invoked in-process)."""
    try:
        yield
    except (ClientError, httpx.TransportError) as exc:
        report(exc)


# --- options -------------------------------------------------------------------------------------------------


def connection_options(func: F) -> F:
    """``--url`` and ``--token``, from LEDGER_URL and LEDGER_TOKEN when not given."""
    func = click.option(
        "--token",
        default=None,
        envvar="LEDGER_TOKEN",
        help="your API token (env LEDGER_TOKEN); default: the registrar's, from LEDGER_DATA_DIR",
    )(func)
    return click.option(
        "--url",
        default=DEFAULT_URL,
        show_default=True,
        envvar="LEDGER_URL",
        help="the ledger's API (env LEDGER_URL)",
    )(func)


def refuse_old_key(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        raise click.UsageError(
            "--key is not a private key any more: give the participant's key file as --key-file "
            "(--key only names the log's verifier key, and is deprecated there in favour of --log-key)",
            ctx,
        )


def signer_options(func: F) -> F:
    """``--as`` (the participant that signs) and ``--key-file`` (its private key file, from ``ledger keygen``),
    from LEDGER_AS and LEDGER_KEY_FILE when not given."""
    func = click.option("--key", "old_key", hidden=True, expose_value=False, callback=refuse_old_key)(func)
    func = click.option(
        "--key-file",
        "key_file",
        default=None,
        envvar="LEDGER_KEY_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="your private key file, from `ledger keygen` (env LEDGER_KEY_FILE); it never leaves this machine",
    )(func)
    return click.option(
        "--as",
        "actor",
        default=None,
        envvar="LEDGER_AS",
        help="your participant id, the signer (env LEDGER_AS)",
    )(func)


def participant_options(func: F) -> F:
    """Connection and signer options together."""
    return connection_options(signer_options(func))


_DEPRECATED_KEY = "ledger.deprecated-key"


def inline_or_file(value: str) -> str:
    """A key given inline (a vkey, ``name+hash+base64``) or as a file holding it, stripped."""
    path = Path(value)
    return path.read_text().strip() if path.is_file() else value.strip()


def log_key_option(*, required: bool, help: str) -> Callable[[F], F]:
    """``--log-key``: the log's verifier key, inline or a file holding it. ``--key`` is accepted, with a
    deprecation warning, for scripts written before the rename. The value reaches the command as ``key``."""

    def old_spelling(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            click.secho("warning: --key is deprecated here; use --log-key", fg="yellow", err=True)
            ctx.meta[_DEPRECATED_KEY] = value

    def resolve(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        old = ctx.meta.pop(_DEPRECATED_KEY, None)
        if value is None:
            value = old
        if value is None and required:
            raise click.MissingParameter(ctx=ctx, param=param)
        return value

    def decorate(func: F) -> F:
        func = click.option(
            "--log-key",
            "key",
            default=None,
            callback=resolve,
            help=help + (" [required]" if required else ""),
        )(func)
        # declared after, so listed first: processed before --log-key when neither is given on the line
        return click.option(
            "--key", "deprecated_key", hidden=True, expose_value=False, callback=old_spelling
        )(func)

    return decorate


def json_option(func: F) -> F:
    """``--json``, passed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON (for scripts)")(func)


_JSON_META = "ledger.json"


def _remember_json(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    ctx.meta[_JSON_META] = bool(value)


def json_flag(func: F) -> F:
    """``--json`` for commands that print through :func:`show` (it is not passed to the command)."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_remember_json,
        help="print JSON (for scripts)",
    )(func)


def wants_json() -> bool:
    """Whether the running command was given ``--json`` (:func:`json_flag`)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(_JSON_META))


def show(value: Any, human: Callable[[Any], str] | None = None) -> None:
    """Print a command's answer as its ``--json`` flag (:func:`json_flag`) asks."""
    emit(value, wants_json(), human)


# --- clients -------------------------------------------------------------------------------------------------


def make_client(
    url: str, token: str | None, key_file: Path | None, actor: str | None, *, signs: bool
) -> LedgerClient:
    """A client for one participant. ``signs``: the command signs an event, so ``--as`` and ``--key-file`` are
    needed. Without ``--token``, the registrar's token in LEDGER_DATA_DIR is used (an operator on the server)."""
    from ledger.settings import Settings

    settings = Settings.from_env()
    if token is None and settings.registrar_token_path.exists():
        token = settings.registrar_token_path.read_text().strip()
    if token is None:
        fail("no API token: give --token (or set LEDGER_TOKEN)")
    if signs and (actor is None or key_file is None):
        fail(
            "this command signs an event with your key: give --as PARTICIPANT and --key-file KEYFILE "
            "(or set LEDGER_AS and LEDGER_KEY_FILE)"
        )
    key = SigningKey.load(key_file) if key_file is not None else None
    return LedgerClient(url, token=token, actor=actor, key=key)


# --- output --------------------------------------------------------------------------------------------------


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def print_json(value: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def submitted(result: SubmitResultView, kind: str = "event") -> str:
    """``accepted: extract sha256:... at log index 12`` (or ``duplicate: ...``)."""
    where = f" at log index {result.log_index}" if result.log_index is not None else ""
    return f"{result.status}: {kind} {result.event_id}{where}"


def emit(value: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """``--json``: the value as JSON; otherwise ``human(value)``, or an indented outline of it (a submission's
    result in one line)."""
    if as_json:
        print_json(value)
    elif human is not None:
        click.echo(human(value))
    elif isinstance(value, SubmitResultView):
        click.echo(submitted(value))
    else:
        click.echo(outline(to_builtins(value)))


def outline(value: Any, indent: int = 0) -> str:
    """A readable outline of JSON-like data: ``name: value`` lines, lists as ``-`` items, empties left out."""
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for name, item in value.items():
            if item is None or item == [] or item == {}:
                continue
            label = str(name).replace("_", " ")
            if isinstance(item, dict | list):
                lines.append(f"{pad}{label}:")
                lines.append(outline(item, indent + 1))
            else:
                lines.append(f"{pad}{label}: {item}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list):
                text = outline(item, indent + 1).lstrip()
                lines.append(f"{pad}- {text}")
            else:
                lines.append(f"{pad}- {item}")
    else:
        lines.append(f"{pad}{value}")
    return "\n".join(line for line in lines if line)


def kg(mass_g: int) -> str:
    kilograms, grams = divmod(mass_g, 1000)
    return f"{kilograms:,} kg" if grams == 0 else f"{kilograms:,}.{grams:03d} kg"


# --- progress ------------------------------------------------------------------------------------------------


def progress_line(done: int, total: int, seconds: float, unit: str) -> str:
    """``3/9 benchmarks (33 %), 0.05 benchmarks/s, about 2 min 0 s left``: progress for output that cannot redraw
    a bar (it prints lines of its own between the steps)."""
    rate = done / seconds if seconds > 0 else 0.0
    percent = 100 * done // total if total else 100
    text = f"{done}/{total} {unit} ({percent} %), {rate:,.2f} {unit}/s"
    if 0 < done < total and rate > 0:
        left = round((total - done) / rate)
        text += f", about {left // 60} min {left % 60} s left"
    return text


class Progress:
    """A progress bar on stderr with the rate and the time left, for long tasks (``report(done, total)``).
    Quiet when stderr is not a terminal unless ``always``: scripts get their output clean, and one summary line."""

    def __init__(self, label: str, unit: str = "items", *, always: bool = False) -> None:
        self.label = label
        self.unit = unit
        self.enabled = always or sys.stderr.isatty()
        self._bar: Any = None
        self._done = 0
        self._start = time.monotonic()

    def _info(self) -> str:
        seconds = time.monotonic() - self._start
        rate = self._done / seconds if seconds > 0 else 0.0
        return f"{rate:,.0f} {self.unit}/s"

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(total, 1),
                label=self.label,
                file=sys.stderr,
                show_eta=True,
                show_percent=True,
                show_pos=True,
                item_show_func=lambda _: self._info(),
                width=24,
            )
            self._bar.__enter__()
        self._bar.length = max(total, 1)
        step = done - self._done
        self._done = done
        if step > 0:
            self._bar.update(step, self._done)

    def echo(self, text: str) -> None:
        """Print a line of output above the bar (the bar is cleared first, then drawn again below it)."""
        if self._bar is None:
            click.echo(text)
            return
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        click.echo(text)
        self._bar.render_progress()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

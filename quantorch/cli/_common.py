"""Pieces every command module shares: options (defined once), error mapping, loaders."""

from __future__ import annotations

import datetime as dt
import re
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from quantorch.errors import DateRangeError, QuantorchError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# ---- options shared by every command (defined once) -------------------------------------------
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="YAML config file (default: the packaged configs/default.yaml).",
                 show_default=False),
]
DbOpt = Annotated[
    Optional[Path],
    typer.Option("--db", envvar="QUANTORCH_DB", show_default=False,
                 help="DuckDB file for prices and runs [env QUANTORCH_DB; default from config]."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, for scripts.")]
SourceOpt = Annotated[
    Optional[str],
    typer.Option("--source", show_default=False,
                 help="Price source: sample (offline, real), yfinance (online), file (imported)."),
]
TickersOpt = Annotated[
    Optional[str],
    typer.Option("--universe", "--tickers", show_default=False,
                 help="Comma-separated tickers, e.g. AAPL,MSFT (default: the config universe)."),
]
StartOpt = Annotated[
    Optional[str],
    typer.Option("--start", show_default=False,
                 help="First date: YYYY, YYYY-MM or YYYY-MM-DD (a year means 1 January)."),
]
EndOpt = Annotated[
    Optional[str],
    typer.Option("--end", show_default=False,
                 help="Last date: YYYY, YYYY-MM or YYYY-MM-DD (a year means 31 December; "
                      "default: the latest data)."),
]


@contextmanager
def guard(debug: bool) -> Iterator[None]:
    """Map errors to one line on stderr and an exit code; tracebacks only with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except QuantorchError as exc:
        if debug:
            traceback.print_exc()
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err.print("interrupted; nothing was stored for the unfinished work")
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug: say so plainly
        if debug:
            traceback.print_exc()
        err.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback and report it)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(70) from None


def parse_date(text: str | None, *, is_end: bool = False) -> dt.date | None:
    """``2020`` -> 2020-01-01 (or 12-31 for an end), ``2020-03`` -> 1st (or last) of March."""
    if text is None:
        return None
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            return dt.date(int(value), 12, 31) if is_end else dt.date(int(value), 1, 1)
        if re.fullmatch(r"\d{4}-\d{1,2}", value):
            year, month = (int(p) for p in value.split("-"))
            first = dt.date(year, month, 1)
            if not is_end:
                return first
            following = dt.date(year + month // 12, month % 12 + 1, 1)
            return following - dt.timedelta(days=1)
        return dt.date.fromisoformat(value)
    except ValueError:
        flag = "--end" if is_end else "--start"
        raise DateRangeError(
            f"bad date '{text}' for {flag}: use YYYY, YYYY-MM or YYYY-MM-DD"
        ) from None


def parse_tickers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip().upper() for t in text.split(",") if t.strip()]


def load(config_path: Path | None, overrides: dict[str, Any]):
    from quantorch.config import load_config

    return load_config(config_path).with_overrides(overrides)


def open_store(config, db: Path | None):
    from quantorch.config import resolve_db_path
    from quantorch.store import Store

    return Store(resolve_db_path(config, db))

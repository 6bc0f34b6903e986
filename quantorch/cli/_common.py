"""Pieces every command module shares: the app factory, options (defined once), error mapping,
progress, loaders.

Errors reach the user as one line on stderr with a documented exit code:

==== ==============================================================================
code meaning
==== ==============================================================================
0    done
2    input to fix: a flag, a file, a config or profile, a ticker, a date (also usage errors)
3    temporary: network, an endpoint down, a database locked by another process, a full disk
4    a plug-in (tool or strategy) failed
70   an internal error: a bug in quantorch (rerun with --debug and report it)
130  interrupted (Ctrl-C); 143: terminated (SIGTERM). Nothing half-written is kept.
==== ==============================================================================
"""

from __future__ import annotations

import datetime as dt
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from quantorch.errors import DateRangeError, QuantorchError

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

#: Exit codes besides the errors' own (see the module docstring).
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (every transaction rolls back) but exiting 143."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise Terminated()


# ---- the app ---------------------------------------------------------------------------------

# typer re-exports click's exceptions only through BadParameter's ancestry; read them from there
# so this works whether typer vendors click or uses the installed one.
_CLICK_ERRORS = {c.__name__: c for c in typer.BadParameter.__mro__}
_ClickException = _CLICK_ERRORS["ClickException"]
_UsageError = _CLICK_ERRORS["UsageError"]


class _Group(TyperGroup):
    """The root command group: one line for usage errors, SIGTERM like Ctrl-C, quiet warnings."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        argv = list(sys.argv[1:] if args is None else args)
        previous = _install_signal_handler()
        _quiet_third_party_warnings(debug="--debug" in argv)
        try:
            code = super().main(args=argv, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except _UsageError as exc:
            code = _usage_error(exc)
        except _ClickException as exc:
            error_line(exc.format_message())
            code = exc.exit_code
        except (typer.Abort, KeyboardInterrupt) as exc:
            error_line("interrupted before the command started; nothing was done")
            code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def _install_signal_handler():
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. an embedding application): leave it alone
        return None


def _usage_error(exc) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: show its help
        exc.show()
        return exc.exit_code
    ctx = exc.ctx
    # the program is always called quantorch in the hint (test runners name it otherwise)
    where = " ".join(["quantorch", *(ctx.command_path.split()[1:] if ctx is not None else [])])
    message = " ".join(exc.format_message().split()).rstrip(".")
    error_line(f"{message} (see `{where} --help`)")
    return exc.exit_code


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A command group with quantorch's conventions: plain help text, no completion, no
    pretty tracebacks (errors are one line, see :func:`guard`)."""
    return typer.Typer(
        help=help,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["--help", "-h"], "max_content_width": 100},
        **kwargs,
    )


def root_app(help: str) -> typer.Typer:
    """The ``quantorch`` app itself (its group handles errors and signals, see :class:`_Group`)."""
    return new_app(help, cls=_Group)


def _quiet_third_party_warnings(debug: bool) -> None:
    """Third-party deprecation chatter (pandas, numpy, numba, ...) never reaches a trader's
    terminal; quantorch's own warnings are one line. ``--debug`` shows everything."""
    if debug:
        warnings.simplefilter("default")
        return
    package = str(Path(__file__).resolve().parents[1])
    plugins = str(Path(__file__).resolve().parents[2])

    def show(message, category, filename, lineno, file=None, line=None):
        if str(Path(filename).resolve()).startswith((package, plugins)) and not issubclass(
            category, DeprecationWarning | FutureWarning | PendingDeprecationWarning
        ):
            error_line(f"{message}", prefix="warning: ", style="yellow")

    warnings.showwarning = show


# ---- output ------------------------------------------------------------------------------------


def error_line(message: str, *, prefix: str = "error: ", style: str = "bold red") -> None:
    """One line on stderr, secrets redacted, no markup interpretation (``[x]`` stays ``[x]``)."""
    from quantorch.redact import redact

    text = " ".join(redact(str(message)).split())
    err.print(Text.assemble((prefix, style), text), soft_wrap=True)


@contextmanager
def guard(debug: bool) -> Iterator[None]:
    """Map errors to one line on stderr and an exit code; tracebacks only with --debug."""
    try:
        yield
    except typer.Exit:
        raise
    except QuantorchError as exc:
        if debug:
            _print_traceback()
        error_line(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        error_line(
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: unfinished work was not "
            "stored (a run is stored whole or not at all)",
            prefix="",
            style="",
        )
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
    except Exception as exc:  # a bug: say so plainly
        if debug:
            _print_traceback()
        error_line(
            f"{type(exc).__name__}: {exc} (run again with --debug for the traceback and report it)",
            prefix="internal error: ",
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def _print_traceback() -> None:
    from quantorch.redact import redact

    sys.stderr.write(redact(traceback.format_exc()))


def compact_table(title: str | None = None) -> Table:
    """A table for the terminal that fits 80 columns: a rule under the header, no borders."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                 pad_edge=False, padding=(0, 1), collapse_padding=True)


class BarProgress:
    """:class:`quantorch.progress.Progress` as a rich progress bar on stderr: each phase with its
    count (``37/157``), elapsed time and ETA. Silent when stderr is not a terminal."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._live = err.is_terminal
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[detail]}", style="dim"),
            console=err,
            transient=True,
            disable=not self._live,
        )
        self._task = None

    def __enter__(self) -> BarProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def phase(self, description: str, total: int | None = None) -> None:
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(description, total=total, detail="")

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        if self._task is not None:
            self._bar.update(self._task, advance=steps, detail=detail or "")


# ---- options shared by every command (defined once) -------------------------------------------

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", metavar="FILE", show_default=False,
                 help="YAML config file [default: the packaged configs/default.yaml]."),
]
DbOpt = Annotated[
    Optional[Path],
    typer.Option("--db", envvar="QUANTORCH_DB", metavar="FILE", show_default=False,
                 show_envvar=False,
                 help="DuckDB file for prices and runs [env QUANTORCH_DB; default: the "
                      "config's database.path, quantorch.duckdb in the current folder]."),
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, for scripts.")]
SourceOpt = Annotated[
    Optional[str],
    typer.Option("--source", metavar="NAME", show_default=False,
                 help="Price source: sample (offline, real; the default), yfinance (online), "
                      "file (imported with `quantorch data import`)."),
]
TickersOpt = Annotated[
    Optional[str],
    typer.Option("--universe", "--tickers", metavar="TICKERS", show_default=False,
                 help="Comma-separated tickers, e.g. AAPL,MSFT [default: the config's universe, "
                      "the 20 sample stocks]."),
]
StartOpt = Annotated[
    Optional[str],
    typer.Option("--start", metavar="DATE", show_default=False,
                 help="First date: YYYY, YYYY-MM or YYYY-MM-DD (a year means 1 January)."),
]
EndOpt = Annotated[
    Optional[str],
    typer.Option("--end", metavar="DATE", show_default=False,
                 help="Last date: YYYY, YYYY-MM or YYYY-MM-DD (a year means 31 December) "
                      "[default: the latest data]."),
]
ProfileOpt = Annotated[
    Optional[str],
    typer.Option("--profile", metavar="NAME", show_default=False,
                 help="Trader profile: a shipped name (see `quantorch profile list`) or a YAML "
                      "file [default: neutral]. Its RiskGuard limits apply to orchestrators and "
                      "rule strategies alike."),
]

ToolCallsOpt = Annotated[
    Optional[str],
    typer.Option("--tool-calls", metavar="HOW", show_default=False,
                 help="How an orchestrator's tool calls are answered: panel (whole-period "
                      "panels, fast; the default) or live (real calls through the tool runner "
                      "at each decision time: asof cut, timeout, cache). The llm "
                      "orchestrator always makes real calls."),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="N", show_default=False,
                                                help="Random seed [default: 42].")]
OrchestratorOpt = Annotated[
    Optional[str],
    typer.Option("--orchestrator", metavar="NAME", show_default=False,
                 help="Orchestrator that routes between the priced tools and decides: policy "
                      "(the trained PPO router), all-tools, free-tools, technical-only, "
                      "random, or llm (a chat model served by vLLM at the config's "
                      "llm.base_url; see `quantorch serve llm`) [default: policy]."),
]
CheckpointOpt = Annotated[
    Optional[Path],
    typer.Option("--checkpoint", metavar="FILE", show_default=False,
                 help="Policy checkpoint from `quantorch train` [default: the shipped one]."),
]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", metavar="FILE", show_default=False,
                 help="Write the result to this file (replaced atomically; never a database)."),
]

DateFormatOpt = Annotated[
    Optional[str],
    typer.Option("--date-format", metavar="FMT", show_default=False,
                 help="strptime format of the file's dates when they are not ISO 8601 "
                      "(YYYY-MM-DD, or with a time and offset), e.g. %d/%m/%Y, %Y%m%d or "
                      "'%d/%m/%Y %H:%M %z'; ambiguous or mixed dates are refused."),
]

#: Config keys as the flags that set them, so a bad value names the flag the user typed.
FLAGS = {
    "backtest.start": "--start",
    "backtest.end": "--end",
    "backtest.strategy": "--strategy",
    "backtest.rebalance": "--rebalance",
    "backtest.initial_cash": "--initial-cash",
    "costs.fee_bps": "--fee-bps",
    "costs.slippage_bps": "--slippage-bps",
    "data.source": "--source",
    "universe": "--universe",
    "benchmark": "--benchmark",
    "seed": "--seed",
    "orchestrator.name": "--orchestrator",
    "orchestrator.profile": "--profile",
    "orchestrator.checkpoint": "--checkpoint",
    "backtest.tool_calls": "--tool-calls",
    "training.train_start": "--train-start",
    "training.train_end": "--train-end",
    "training.val_start": "--val-start",
    "training.val_end": "--val-end",
    "training.profiles": "--profiles",
    "training.steps": "--steps",
}


def parse_date(text: str | None, *, is_end: bool = False, flag: str | None = None) -> dt.date | None:
    """``2020`` -> 2020-01-01 (or 12-31 for an end), ``2020-03`` -> 1st (or last) of March."""
    if text is None:
        return None
    value = text.strip()
    name = flag or ("--end" if is_end else "--start")
    try:
        if re.fullmatch(r"\d{4}", value):
            parsed = dt.date(int(value), 12, 31) if is_end else dt.date(int(value), 1, 1)
        elif re.fullmatch(r"\d{4}-\d{1,2}", value):
            year, month = (int(p) for p in value.split("-"))
            parsed = dt.date(year, month, 1)
            if is_end:
                following = dt.date(year + month // 12, month % 12 + 1, 1)
                parsed = following - dt.timedelta(days=1)
        else:
            parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise DateRangeError(
            f"bad date '{text}' for {name}: use YYYY, YYYY-MM or YYYY-MM-DD"
        ) from None
    if not 1900 <= parsed.year <= 2200:
        raise DateRangeError(f"bad date '{text}' for {name}: pick a year between 1900 and 2200")
    return parsed


def parse_tickers(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip().upper() for t in text.split(",") if t.strip()]


def load(config_path: Path | None, overrides: dict[str, Any]):
    from quantorch.config import load_config

    return load_config(config_path).with_overrides(overrides, labels=FLAGS)


def open_store(config, db: Path | None):
    from quantorch.config import resolve_db_path
    from quantorch.store import Store

    return Store(resolve_db_path(config, db))


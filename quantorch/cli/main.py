"""The ``quantorch`` command line: thin typer commands that parse, call the core, and print.

Errors from the core arrive as :class:`~quantorch.errors.QuantorchError`; each is printed as one
line on stderr with its exit code (2 input, 3 temporary, 4 plugin). ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from quantorch import __version__
from quantorch.cli._common import (
    ConfigOpt,
    DbOpt,
    DebugOpt,
    EndOpt,
    JsonOpt,
    SourceOpt,
    StartOpt,
    TickersOpt,
    err,
    guard,
    load,
    open_store,
    out,
    parse_date,
    parse_tickers,
)
from quantorch.errors import UserInputError

app = typer.Typer(
    name="quantorch",
    help=(
        "quantorch: backtest and run trading orchestrators that decide which priced analysis "
        "tools to call and what position to take. Offline by default on real S&P 500 data."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch, import and list the prices stored in the database.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _register_commands() -> None:
    """Command groups that live in their own modules."""
    from quantorch.cli import news_cmd, orchestrator_cmd, query_cmd
    from quantorch.cli.profile_cmd import profile_app
    from quantorch.cli.tools_cmd import tools_app

    app.add_typer(profile_app, name="profile")
    app.add_typer(tools_app, name="tools")
    orchestrator_cmd.register(app)
    query_cmd.register(app)
    news_cmd.register(data_app)


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if key in {"sharpe", "sortino", "calmar", "turnover", "exposure"}:
        return f"{value:,.2f}"
    if key in {"fees_paid", "slippage_paid"}:
        return f"{value:,.0f}"
    return f"{value:+.2%}" if key != "volatility" else f"{value:.2%}"


_METRIC_LABELS = {
    "total_return": "Total return",
    "cagr": "CAGR",
    "volatility": "Volatility (ann.)",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "max_drawdown": "Max drawdown",
    "calmar": "Calmar",
    "turnover": "Turnover (x/yr)",
    "exposure": "Exposure",
    "fees_paid": "Fees paid ($)",
    "slippage_paid": "Slippage paid ($)",
}


def _version(value: bool) -> None:
    if value:
        out.print(f"quantorch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """quantorch command line."""


@app.command()
def backtest(
    start: StartOpt = None,
    end: EndOpt = None,
    universe: TickersOpt = None,
    strategy: Annotated[
        Optional[str],
        typer.Option("--strategy", show_default=False,
                     help="Rule strategy instead of an orchestrator: buy-and-hold, sma-cross."),
    ] = None,
    orchestrator: Annotated[
        Optional[str],
        typer.Option("--orchestrator", show_default=False,
                     help="Orchestrator: policy (trained, default), all-tools, free-tools, "
                          "technical-only, random, buy-and-hold."),
    ] = None,
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", show_default=False,
                     help="Trader profile for the orchestrator (see `quantorch profile list`)."),
    ] = None,
    checkpoint: Annotated[
        Optional[Path],
        typer.Option("--checkpoint", show_default=False,
                     help="Policy checkpoint from `quantorch train` (default: the shipped one)."),
    ] = None,
    source: SourceOpt = None,
    fee_bps: Annotated[
        Optional[float], typer.Option("--fee-bps", show_default=False,
                                      help="Commission in basis points of traded notional.")
    ] = None,
    slippage_bps: Annotated[
        Optional[float], typer.Option("--slippage-bps", show_default=False,
                                      help="Slippage in basis points of the fill price.")
    ] = None,
    rebalance: Annotated[
        Optional[str], typer.Option("--rebalance", show_default=False,
                                    help="Rebalance at each session's close: daily, weekly or "
                                         "monthly (last session of the period).")
    ] = None,
    initial_cash: Annotated[
        Optional[float], typer.Option("--initial-cash", show_default=False,
                                      help="Starting cash in USD.")
    ] = None,
    benchmark: Annotated[
        Optional[str], typer.Option("--benchmark", show_default=False,
                                    help="Benchmark ticker (default SP500; 'none' to skip).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", show_default=False,
                                                help="Random seed recorded with the run.")] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Backtest a strategy on daily bars and compare it with the benchmark.

    Decisions are taken at a session's close and fill at the next session (open where the source
    has opens, else close), with fees and slippage always charged. The run, its daily equity
    and its fills are stored in the database, and an HTML report is written under backtests/.

    Example: quantorch backtest --start 2020 --strategy sma-cross --fee-bps 2
    """
    with guard(debug):
        if strategy is not None and (orchestrator or profile or checkpoint):
            raise UserInputError(
                "--strategy runs a rule strategy; --orchestrator, --profile and --checkpoint "
                "are for orchestrators: pass one or the other"
            )
        overrides = {
            "orchestrator.name": orchestrator,
            "orchestrator.profile": profile,
            "orchestrator.checkpoint": checkpoint,
            "backtest.start": parse_date(start),
            "backtest.end": parse_date(end, is_end=True),
            "universe": parse_tickers(universe),
            "backtest.strategy": strategy,
            "data.source": source,
            "costs.fee_bps": fee_bps,
            "costs.slippage_bps": slippage_bps,
            "backtest.rebalance": rebalance,
            "backtest.initial_cash": initial_cash,
            "benchmark": benchmark,
            "seed": seed,
        }
        if orchestrator or profile or checkpoint:
            overrides["backtest.strategy"] = "orchestrator"
        cfg = load(config, overrides)
        from quantorch.backtest.runner import run_backtest

        store = open_store(cfg, db)
        with err.status("starting", spinner="dots") as status:
            outcome = run_backtest(cfg, store, status=lambda msg: status.update(msg))
        if json_output:
            sys.stdout.write(json.dumps(outcome.to_json(), allow_nan=False) + "\n")
            return
        table = Table(
            title=f"{outcome.strategy} vs {outcome.benchmark or 'no benchmark'}, "
                  f"{outcome.start} to {outcome.end}",
        )
        table.add_column("Metric")
        table.add_column(outcome.strategy, justify="right")
        if outcome.benchmark_metrics is not None:
            table.add_column(outcome.benchmark or "benchmark", justify="right")
        for key, label in _METRIC_LABELS.items():
            row = [label, _fmt(key, outcome.metrics.get(key))]
            if outcome.benchmark_metrics is not None:
                row.append(_fmt(key, outcome.benchmark_metrics.get(key)))
            table.add_row(*row)
        out.print(table)
        if outcome.tools is not None:
            _print_tools(outcome.tools)
        out.print(f"run id: {outcome.run_id}  ({outcome.fills} fills, config {outcome.config_hash})")
        out.print(f"report: {outcome.report_path}", soft_wrap=True)


def _print_tools(tools: dict) -> None:
    bps = tools["tool_cost_bps_of_traded_notional"]
    out.print(
        f"tools: {tools['tool_calls']:,} calls for {tools['decisions']:,} decisions "
        f"({tools['calls_per_decision']:.2f} per decision); cost ${tools['tool_cost_usd']:,.4f} "
        f"(${tools['tool_cost_per_decision_usd']:.5f} per decision, "
        f"{'n/a' if bps is None else f'{bps:.5f}'} bps of traded notional)"
    )
    if tools["tool_mix"]:
        mix = ", ".join(f"{k} {v:.0%}" for k, v in tools["tool_mix"].items())
        out.print(f"tool mix: {mix}")
    if tools["pnl_attribution_usd"]:
        parts = ", ".join(f"{k} {v:+,.0f}" for k, v in sorted(
            tools["pnl_attribution_usd"].items(), key=lambda kv: -abs(kv[1])))
        out.print(f"P&L by tools used (USD, horizon forward return): {parts}")


@data_app.command("fetch")
def data_fetch(
    start: StartOpt = None,
    end: EndOpt = None,
    tickers: TickersOpt = None,
    source: SourceOpt = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fetch prices into the database; ranges already stored make no request.

    Example: quantorch data fetch --source yfinance --tickers AAPL,MSFT --start 2015
    """
    with guard(debug):
        from quantorch.data.providers import get_provider
        from quantorch.data.service import check_known_tickers, ensure_prices, resolve_window

        cfg = load(config, {"universe": parse_tickers(tickers), "data.source": source})
        store = open_store(cfg, db)
        provider = get_provider(cfg.data.source)
        if provider is None:
            raise UserInputError(
                "the file source is filled by `quantorch data import FILE`, not fetched"
            )
        available = provider.available()
        wanted = list(cfg.universe)
        if available is not None:
            check_known_tickers(wanted, list(available), cfg.data.source)
        first, last = resolve_window(
            available, wanted, parse_date(start) or dt.date(1990, 1, 1),
            parse_date(end, is_end=True), cfg.data.source,
        )
        with err.status("fetching", spinner="dots") as status:
            report = ensure_prices(store, cfg.data.source, wanted, first, last,
                                   provider=provider, on_request=status.update)
        if report.cached:
            out.print(f"already stored: {len(wanted)} ticker(s) from {cfg.data.source}, "
                      f"{first} to {last}; no request made")
        else:
            out.print(f"stored {report.rows_written:,} rows in {len(report.requests)} "
                      f"request(s) into {store.path}")


@data_app.command("import")
def data_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file: date, ticker, close, "
                                              "adj_close [, open, high, low, volume].")],
    adjusted: Annotated[bool, typer.Option("--adjusted",
                                           help="Closes are already adjusted: use close as "
                                                "adj_close when that column is absent.")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Import daily bars from a file as the `file` source; a bad file writes nothing.

    Example: quantorch data import prices.csv, then quantorch backtest --source file --start 2020
    """
    with guard(debug):
        from quantorch.data.service import import_prices, read_price_file

        cfg = load(config, {})
        frame = read_price_file(file, adjusted=adjusted)
        store = open_store(cfg, db)
        rows = import_prices(store, frame, source="file")
        n_tickers = frame["ticker"].nunique()
        out.print(f"imported {rows:,} rows for {n_tickers} ticker(s) from {file} into {store.path}")


@data_app.command("list")
def data_list(
    available: Annotated[bool, typer.Option("--available",
                                            help="List what the offline sample source offers "
                                                 "instead of what is stored.")] = False,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """List stored prices: ticker, source, first and last date, rows."""
    with guard(debug):
        import pandas as pd

        if available:
            from quantorch.data.providers.sample import SampleProvider

            spans = SampleProvider().available()
            frame = pd.DataFrame(
                [(t, "sample", a, b) for t, (a, b) in sorted(spans.items())],
                columns=["ticker", "source", "first_date", "last_date"],
            )
        else:
            from quantorch.data.service import coverage_table

            cfg = load(config, {})
            frame = coverage_table(open_store(cfg, db))
        if json_output:
            sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
            return
        if frame.empty:
            out.print("no prices stored yet: run `quantorch backtest --start 2020` or "
                      "`quantorch data fetch`")
            return
        table = Table()
        for column in frame.columns:
            table.add_column(column, justify="right" if column == "rows" else "left")
        for row in frame.itertuples(index=False):
            table.add_row(*(str(v)[:10] if isinstance(v, pd.Timestamp) else str(v) for v in row))
        out.print(table)


_register_commands()


def run() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    run()

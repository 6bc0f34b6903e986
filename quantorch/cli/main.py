"""The ``quantorch`` command line: thin typer commands that parse, call the core, and print.

Errors from the core arrive as :class:`~quantorch.errors.QuantorchError`; each is printed as one
line on stderr with its exit code (see :mod:`quantorch.cli._common`). ``--debug`` shows the
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
    BarProgress,
    CheckpointOpt,
    ConfigOpt,
    DateFormatOpt,
    DbOpt,
    DebugOpt,
    EndOpt,
    JsonOpt,
    OrchestratorOpt,
    OutputOpt,
    ProfileOpt,
    SeedOpt,
    SourceOpt,
    StartOpt,
    TickersOpt,
    ToolCallsOpt,
    error_line,
    guard,
    load,
    new_app,
    open_store,
    out,
    parse_date,
    parse_tickers,
    root_app,
)
from quantorch.errors import UserInputError

app = root_app(
    "quantorch: backtest and evaluate orchestrators that decide which priced analysis tools "
    "to call (technical, fundamental, sentiment, risk) and what position to take. Offline by "
    "default on real S&P 500 data; everything is stored in one DuckDB file."
)
data_app = new_app("Fetch, import and list the prices, news and filings stored in the database.")
app.add_typer(data_app, name="data")


def _register_commands() -> None:
    """Command groups that live in their own modules."""
    from quantorch.cli import news_cmd, orchestrator_cmd, query_cmd, train_llm_cmd
    from quantorch.cli.paper_cmd import paper_app
    from quantorch.cli.profile_cmd import profile_app
    from quantorch.cli.serve_cmd import serve_app
    from quantorch.cli.tools_cmd import tools_app

    app.add_typer(paper_app, name="paper")
    app.add_typer(profile_app, name="profile")
    app.add_typer(serve_app, name="serve")
    app.add_typer(tools_app, name="tools")
    orchestrator_cmd.register(app)
    train_llm_cmd.register(app)
    query_cmd.register(app)
    news_cmd.register(data_app)


#: Rows of the backtest table: label, key, kind.
_METRIC_ROWS = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility (ann.)", "volatility", "pct_unsigned"),
    ("Sharpe", "sharpe", "ratio"),
    ("Sortino", "sortino", "ratio"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Calmar", "calmar", "ratio"),
    ("Turnover (x/yr)", "turnover", "ratio"),
    ("Exposure", "exposure", "ratio"),
    ("Fees paid ($)", "fees_paid", "usd"),
    ("Slippage paid ($)", "slippage_paid", "usd"),
)


def _fmt(kind: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if kind == "ratio":
        return f"{value:,.2f}"
    if kind == "usd":
        return f"{value:,.0f}"
    if kind == "pct_unsigned":
        return f"{value:.2%}"
    return f"{value:+.2%}"


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
    orchestrator: OrchestratorOpt = None,
    profile: ProfileOpt = None,
    checkpoint: CheckpointOpt = None,
    tool_calls: ToolCallsOpt = None,
    strategy: Annotated[
        Optional[str],
        typer.Option("--strategy", metavar="NAME", show_default=False,
                     help="Run a rule strategy instead of an orchestrator: buy-and-hold (equal "
                          "weight, bought once, never rebalanced) or sma-cross."),
    ] = None,
    source: SourceOpt = None,
    fee_bps: Annotated[
        Optional[float], typer.Option("--fee-bps", metavar="BPS", show_default=False,
                                      help="Commission, basis points of traded notional "
                                           "[default: 1].")
    ] = None,
    slippage_bps: Annotated[
        Optional[float], typer.Option("--slippage-bps", metavar="BPS", show_default=False,
                                      help="Slippage, basis points of the fill price "
                                           "[default: 5].")
    ] = None,
    rebalance: Annotated[
        Optional[str], typer.Option("--rebalance", metavar="FREQ", show_default=False,
                                    help="Decide at the close of every session (daily), of the "
                                         "last session of each week (weekly) or month "
                                         "(monthly) [default: weekly].")
    ] = None,
    initial_cash: Annotated[
        Optional[float], typer.Option("--initial-cash", metavar="USD", show_default=False,
                                      help="Starting cash [default: 1000000].")
    ] = None,
    benchmark: Annotated[
        Optional[str], typer.Option("--benchmark", metavar="TICKER", show_default=False,
                                    help="Benchmark ticker, or 'none' [default: SP500, the S&P "
                                         "500 price index]. The equal-weight buy-and-hold of the "
                                         "universe is always shown beside it.")
    ] = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Backtest an orchestrator (or a rule strategy) on daily bars against its benchmark.

    Decisions are taken at a session's close and fill at the next session (open where the
    source has opens, else close), with fees and slippage always charged. The run, its daily
    equity, fills, decisions and tool calls are stored in the database, then an HTML report is
    written under backtests/ (regenerate it any time with `quantorch report RUN_ID`).

    Examples: quantorch backtest --start 2020; quantorch backtest --start 2020 --profile
    cautious-fundamental; quantorch backtest --start 2020 --strategy sma-cross --fee-bps 2
    """
    with guard(debug):
        if strategy is not None and (orchestrator or checkpoint or tool_calls):
            raise UserInputError(
                "--strategy runs a rule strategy; --orchestrator, --checkpoint and --tool-calls "
                "are for orchestrators: pass one or the other (--profile sets the RiskGuard "
                "limits of either)"
            )
        overrides = {
            "orchestrator.name": orchestrator,
            "orchestrator.profile": profile,
            "orchestrator.checkpoint": checkpoint,
            "backtest.tool_calls": tool_calls,
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
        if orchestrator or checkpoint or tool_calls:
            overrides["backtest.strategy"] = "orchestrator"
        cfg = load(config, overrides)
        from quantorch.backtest.runner import run_backtest

        store = open_store(cfg, db)
        with BarProgress() as progress:
            outcome = run_backtest(cfg, store, progress=progress)
        if outcome.report_error is not None:
            error_line(
                f"the run {outcome.run_id} is stored but its report could not be written "
                f"({outcome.report_error}); write it with `quantorch report {outcome.run_id}`",
                prefix="warning: ", style="yellow",
            )
        if json_output:
            sys.stdout.write(json.dumps(outcome.to_json(), allow_nan=False) + "\n")
            return
        _print_backtest(outcome)


def _print_backtest(outcome) -> None:
    """The result table (fits 80 columns: long labels become footnotes) and the tool summary."""
    columns = [(outcome.strategy, outcome.metrics, None)]
    if outcome.benchmark_metrics is not None:
        columns.append((f"{outcome.benchmark}*", outcome.benchmark_metrics,
                        f"* {outcome.benchmark}: {outcome.benchmark_label}"))
    columns.append(("EW hold**", outcome.equal_weight_metrics,
                    f"** EW hold: {outcome.equal_weight_label}"))
    table = Table(title=f"{outcome.strategy}, {outcome.start} to {outcome.end}",
                  title_justify="left")
    table.add_column("Metric")
    for name, _metrics, _note in columns:
        table.add_column(name if len(name) <= 18 else name[:17] + "…", justify="right")
    for label, key, kind in _METRIC_ROWS:
        table.add_row(label, *(_fmt(kind, metrics.get(key)) for _name, metrics, _note in columns))
    out.print(table)
    for _name, _metrics, note in columns:
        if note:
            out.print(note, style="dim")
    if outcome.tools is not None:
        _print_tools(outcome.tools)
    if outcome.training_window is not None:
        out.print(f"warning: {outcome.training_window['message']}", style="bold yellow")
    out.print(f"run id: {outcome.run_id}  ({outcome.fills:,} fills, config {outcome.config_hash})")
    if outcome.report_error is None:
        out.print(f"report: {outcome.report_path}")


def _print_tools(tools: dict) -> None:
    bps = tools["tool_cost_bps_of_traded_notional"]
    answered = tools.get("answered_calls", tools["tool_calls"])
    empty = (f", {tools['tool_calls'] - answered:,} of them free: the tool had no data"
             if answered < tools["tool_calls"] else "")
    out.print(
        f"tools: {tools['tool_calls']:,} calls for {tools['decisions']:,} decisions "
        f"({tools['calls_per_decision']:.2f} per decision{empty}); "
        f"cost ${tools['tool_cost_usd']:,.2f} "
        f"(${tools['tool_cost_per_decision_usd']:.4f} per decision, "
        f"{'n/a' if bps is None else f'{bps:.4f}'} bps of traded notional)"
    )
    if tools["tool_mix"]:
        mix = ", ".join(f"{k} {v:.0%}" for k, v in tools["tool_mix"].items())
        out.print(f"tool mix: {mix}")
    llm = tools.get("llm")
    if llm:
        out.print(
            f"llm orchestrator ({llm['model']}): {llm['tokens_per_decision']:,.0f} tokens and "
            f"${llm['cost_per_decision_usd']:.5f} per decision (${llm['cost_usd']:,.4f} in all; "
            f"{llm['cache_hit_rate']:.0%} of {llm['requests']:,} requests from the transcript "
            f"cache); fallbacks {llm['fallbacks']:,} ({llm['fallback_rate']:.1%}), corrective "
            f"re-prompts {llm['corrections']:,}"
        )
    if tools["pnl_attribution_usd"]:
        parts = ", ".join(f"{k} {v:+,.0f}" for k, v in sorted(
            tools["pnl_attribution_usd"].items(), key=lambda kv: -abs(kv[1])))
        out.print(f"P&L by tools used (USD, over each decision's horizon): {parts}")


@app.command("report")
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID",
                                          help="A stored backtest run (`quantorch query "
                                               "\"SELECT run_id FROM v_runs\"` lists them).")],
    output: OutputOpt = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Write (again) the HTML report of a stored backtest, from the database alone.

    Example: quantorch report bt-20260101-120000-abcdef
    """
    with guard(debug):
        from quantorch.backtest.records import regenerate_report

        cfg = load(config, {})
        store = open_store(cfg, db)
        path = regenerate_report(store, run_id, output=output,
                                 default_folder=Path(cfg.reports_dir))
        out.print(f"report: {path}")


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
        with BarProgress() as progress:
            progress.phase(f"fetching from {cfg.data.source}")
            report = ensure_prices(store, cfg.data.source, wanted, first, last,
                                   provider=provider, on_request=progress.phase)
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
    on_bad_rows: Annotated[str, typer.Option("--on-bad-rows",
                                             help="Bad rows (high < low or a price outside "
                                                  "[low, high], one-day decimal-shift "
                                                  "glitches, an open, high or low over 2x from "
                                                  "the close, zero volume): fail (refuse the "
                                                  "file), skip (drop them) or keep (store them "
                                                  "flagged). What was skipped or kept goes to "
                                                  "a JSON report in the reports folder.")
                                             ] = "fail",
    date_format: DateFormatOpt = None,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Import daily bars from a file as the `file` source; a bad file writes nothing.

    Dates are read exactly: ISO by default, else --date-format; bars must be on NYSE sessions.
    Bad rows (prices that do not fit together, one-day decimal-shift glitches, an open, high
    or low over 2x from the close, zero volume) refuse the file unless --on-bad-rows skip
    (dropped) or keep (stored, flagged: a backtest over them warns); what was skipped or kept,
    and the missing sessions inside each ticker's span, go to a JSON report in the reports
    folder.

    Example: quantorch data import prices.csv --on-bad-rows skip, then quantorch backtest
    --source file --start 2020
    """
    with guard(debug):
        from quantorch.data.service import (
            bad_row_mode,
            bad_rows_error,
            import_prices,
            inspect_price_file,
            rows_to_import,
            write_defect_report,
        )

        mode = bad_row_mode(on_bad_rows)  # before reading a large file
        cfg = load(config, {})
        checked = inspect_price_file(file, adjusted=adjusted, date_format=date_format)
        defects = checked.defects
        if mode == "fail" and not defects.rows.empty:
            # the details on stdout; the refusal stays one line on stderr
            out.print(f"{file}: {len(defects.rows):,} bad row(s): {defects.summary()}",
                      soft_wrap=True)
            for line in defects.describe_rows(20):
                out.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
            raise bad_rows_error(defects, checked.origin)
        frame = rows_to_import(checked, mode)
        store = open_store(cfg, db)
        kept = defects.rows if mode == "keep" else None
        rows = import_prices(store, frame, source="file", flagged=kept)
        n_tickers = frame["ticker"].nunique()
        out.print(f"imported {rows:,} rows for {n_tickers} ticker(s) from {file} into {store.path}")
        if defects.rows.empty and defects.gaps.empty:
            return
        report = write_defect_report(checked, mode, cfg.reports_dir, rows_imported=rows).resolve()
        if mode == "skip" and not defects.rows.empty:
            out.print(f"skipped {len(defects.rows):,} bad row(s): {defects.summary()}; every one "
                      f"is listed in {report}", soft_wrap=True)
        elif not defects.rows.empty:
            error_line(f"kept {len(defects.rows):,} bad row(s), flagged: {defects.summary()}; a "
                       f"backtest over them warns; listed in {report}", prefix="warning: ",
                       style="yellow")
        if not defects.gaps.empty:
            example = defects.gaps.iloc[0]
            error_line(f"{defects.gaps_summary()} (e.g. {example['ticker']} "
                       f"{example['date'].date()}): those tickers have no bar on those days; "
                       f"listed in {report}", prefix="warning: ", style="yellow")


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
    """List stored prices: ticker, source, first and last date, rows (reads only)."""
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
            store = open_store(cfg, db)
            if not store.exists:  # a read-only command never creates the file
                if json_output:
                    sys.stdout.write("[]\n")
                    return
                out.print(f"no database at {store.path} yet: run `quantorch backtest --start "
                          "2020` or `quantorch data fetch` to create it")
                return
            frame = coverage_table(store)
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
    """Console-script entry point.

    Every command closes its files and database connections before it returns, so the process
    ends right after its last line: tearing down torch, numba and vectorbt at interpreter exit
    would otherwise add seconds of silence after the output.
    """
    import logging
    import os

    code = app(standalone_mode=False)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that stopped early (| head)
            pass
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()

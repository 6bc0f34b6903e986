"""A stored backtest read back from the database: what its report shows, and the report itself.

``quantorch report RUN_ID`` regenerates a report from the store alone, so a report lost to a
crash (the run is committed before its report is written) or deleted by hand is never lost
for good. Position weights are rebuilt from the stored fills, valued at the run's stored
adjusted closes, as the engine values them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.backtest.report import Comparison, ReportData, remove_stale_partials, write_report
from quantorch.backtest.runner import equal_weight_label, llm_training_window, run_meta, tool_usage
from quantorch.data.providers import benchmark_label
from quantorch.errors import UserInputError, closest
from quantorch.store import Store

__all__ = ["load_report_data", "regenerate_report"]

_RUN_COLUMNS = (
    "run_id", "kind", "strategy", "source", "universe", "benchmark", "benchmark_label",
    "start_date", "end_date", "rebalance", "seed", "config_hash", "config", "code_version",
    "metrics", "benchmark_metrics", "equal_weight_metrics", "report_path",
)  # fmt: skip


def _json(text: str | None) -> dict | None:
    return None if text is None else json.loads(text)


def _run_row(con, run_id: str) -> dict:
    row = con.execute(
        f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id]
    ).fetchone()
    if row is None:
        known = [r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()]
        guess = closest(run_id, known)
        tip = f"did you mean {guess}?" if guess else '`quantorch query "SELECT run_id FROM v_runs"`'
        raise UserInputError(f"no run {run_id!r} in the database ({tip})")
    run = dict(zip(_RUN_COLUMNS, row, strict=True))
    if run["kind"] != "backtest":
        raise UserInputError(
            f"run {run_id} is a {run['kind']} run: `quantorch report` rebuilds backtest reports "
            "(an evaluation's report is written by `quantorch evaluate`)"
        )
    return run


def _weights(fills: pd.DataFrame, closes: pd.DataFrame, equity: pd.Series) -> pd.DataFrame:
    """Position value / equity per ticker at each close, from the fills (signed shares)."""
    dates = pd.DatetimeIndex(equity.index)
    if fills.empty:
        return pd.DataFrame(index=dates, dtype=np.float64)
    signed = np.where(fills["side"] == "buy", fills["quantity"], -fills["quantity"])
    flows = (
        pd.DataFrame({"date": pd.to_datetime(fills["fill_date"]), "ticker": fills["ticker"],
                      "shares": signed})
        .pivot_table(index="date", columns="ticker", values="shares", aggfunc="sum")
        .reindex(dates, fill_value=0.0)
        .fillna(0.0)
    )
    shares = flows.cumsum()
    # the mark: the close, else the last fill price (as the engine values positions)
    last_fill = (
        pd.DataFrame({"date": pd.to_datetime(fills["fill_date"]), "ticker": fills["ticker"],
                      "price": fills["fill_price"]})
        .pivot_table(index="date", columns="ticker", values="price", aggfunc="last")
        .reindex(dates)
    )
    marks = closes.reindex(index=dates, columns=shares.columns)
    marks = marks.where(marks.notna(), last_fill.reindex(columns=shares.columns)).ffill()
    value = (shares * marks).where(shares != 0, 0.0).fillna(0.0)
    return value.div(equity.to_numpy(), axis=0)


def load_report_data(store: Store, run_id: str) -> tuple[ReportData, Path]:
    """What the report of stored backtest ``run_id`` shows, and the path stored with it."""
    with store.connect(read_only=True) as con:
        run = _run_row(con, run_id)
        equity_rows = con.execute(
            "SELECT date, equity, cash, gross_exposure, benchmark_equity, equal_weight_equity "
            "FROM equity WHERE run_id = ? ORDER BY date",
            [run_id],
        ).df()
        fills = con.execute("SELECT * FROM fills WHERE run_id = ? ORDER BY fill_id", [run_id]).df()
        tickers = list(run["universe"])
        closes = con.execute(
            "SELECT date, ticker, adj_close FROM prices WHERE source = ? AND ticker IN "
            "(SELECT unnest(?)) AND date BETWEEN ? AND ?",
            [run["source"], tickers, run["start_date"], run["end_date"]],
        ).df()
        decisions = con.execute(
            "SELECT decision_id, tools_called, target_weight, decision_date, forward_return "
            "FROM v_decisions WHERE run_id = ? ORDER BY decision_id",
            [run_id],
        ).df()
        tool_calls = con.execute(
            "SELECT as_of, tool, provider, cost_usd FROM tool_calls WHERE run_id = ? "
            "ORDER BY as_of",
            [run_id],
        ).df()
        transcripts = con.execute(
            "SELECT model, prompt_tokens, completion_tokens, cost_usd, rounds, cached_rounds, "
            "fallback, corrections, latency_ms FROM llm_transcripts WHERE run_id = ? "
            "ORDER BY decision_id",
            [run_id],
        ).df()
    if equity_rows.empty:
        raise UserInputError(f"run {run_id} has no stored equity: nothing to report")
    index = pd.DatetimeIndex(pd.to_datetime(equity_rows["date"]), name="date")
    equity = pd.Series(equity_rows["equity"].to_numpy(), index=index, name="equity")
    cash = pd.Series(equity_rows["cash"].to_numpy(), index=index, name="cash")
    fills["decision_date"] = pd.to_datetime(fills["decision_date"])
    fills["fill_date"] = pd.to_datetime(fills["fill_date"])
    fills = fills.drop(columns=["run_id", "fill_id"])
    wide = (
        closes.assign(date=pd.to_datetime(closes["date"]))
        .pivot(index="date", columns="ticker", values="adj_close")
        if len(closes) else pd.DataFrame(index=index)
    )
    weights = _weights(fills, wide, equity).reindex(columns=tickers, fill_value=0.0)

    metrics = _json(run["metrics"]) or {}
    comparisons = []
    benchmark_metrics = _json(run["benchmark_metrics"])
    bench = equity_rows["benchmark_equity"]
    if run["benchmark"] and benchmark_metrics is not None and bench.notna().any():
        label = run["benchmark_label"] or benchmark_label(run["benchmark"])
        comparisons.append(Comparison("benchmark", label, pd.Series(bench.to_numpy(), index=index),
                                      benchmark_metrics))
    equal_weight_metrics = _json(run["equal_weight_metrics"])
    held = equity_rows["equal_weight_equity"]
    if equal_weight_metrics is not None and held.notna().any():
        comparisons.append(Comparison("equal_weight", equal_weight_label(len(tickers)),
                                      pd.Series(held.to_numpy(), index=index),
                                      equal_weight_metrics))
    tools = None
    if len(decisions):
        decisions["tools_called"] = decisions["tools_called"].map(list)
        tools = tool_usage(decisions, tool_calls, fills, equity,
                           transcripts if len(transcripts) else None)
    config = _json(run["config"]) or {}
    costs = config.get("costs", {})
    meta = run_meta(
        run_id=run_id, first=index[0].date(), last=index[-1].date(), strategy=run["strategy"],
        universe=tickers, benchmark=run["benchmark"], source=run["source"],
        rebalance=run["rebalance"], fee_bps=float(costs.get("fee_bps", float("nan"))),
        slippage_bps=float(costs.get("slippage_bps", float("nan"))),
        initial_cash=float(config.get("backtest", {}).get("initial_cash", equity.iloc[0])),
        seed=int(run["seed"]), config_hash=run["config_hash"], code=run["code_version"],
    )
    window = llm_training_window(config, index[0].date(), index[-1].date())
    if window is not None:
        meta["training window"] = window["message"]
    data = ReportData(
        title=f"quantorch backtest {run_id}: {run['strategy']}",
        meta=meta,
        equity=equity,
        cash=cash,
        weights=weights,
        metrics=metrics,
        comparisons=comparisons,
        fills=fills,
        tools=tools,
        tool_calls=tool_calls if len(tool_calls) else None,
    )
    return data, Path(run["report_path"]) if run["report_path"] else Path(f"{run_id}.html")


def regenerate_report(
    store: Store, run_id: str, *, output: Path | None = None, default_folder: Path | None = None
) -> Path:
    """Write the report of stored backtest ``run_id``; returns its path.

    ``output`` wins; else the path stored with the run; a stored path whose folder is gone is
    replaced by ``default_folder / RUN_ID.html``.
    """
    data, stored = load_report_data(store, run_id)
    path = Path(output) if output is not None else stored
    if output is None and not path.parent.is_dir() and default_folder is not None:
        path = default_folder / f"{run_id}.html"
    if path.suffix.lower() not in {".html", ".htm"}:
        raise UserInputError(f"--output {path}: a report is an HTML file; end the name in .html")
    remove_stale_partials(path.parent)
    return write_report(path, data)

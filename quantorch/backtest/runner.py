"""One backtest from a config: data -> strategy -> engine -> metrics -> report -> store.

This is the kernel the CLI calls; it owns no I/O of its own beyond the store and the report,
and it writes nothing until the whole run has been computed. The report is written first
(atomically) and the run, its daily equity and its fills are stored in one transaction; if that
transaction fails the report is removed again, so a failed run leaves no trace.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from quantorch.backtest.engine import Costs, SimulationResult, simulate
from quantorch.backtest.metrics import performance_metrics
from quantorch.backtest.report import write_report
from quantorch.config import QuantorchConfig
from quantorch.data import calendar
from quantorch.data.panel import PricePanel
from quantorch.data.providers import get_provider
from quantorch.data.service import (
    check_known_tickers,
    ensure_prices,
    load_panel,
    resolve_window,
    stored_coverage,
)
from quantorch.errors import DateRangeError
from quantorch.store import Store, code_version
from quantorch.strategies import Strategy, get_strategy

__all__ = [
    "BacktestOutcome",
    "Simulated",
    "benchmark_symbol",
    "build_strategy",
    "run_backtest",
    "simulate_config",
    "tool_usage",
]

#: ``backtest.strategy`` value that runs the configured orchestrator.
ORCHESTRATOR = "orchestrator"

#: The benchmark named in a config, as each source spells it.
_BENCHMARK_ALIASES = {("yfinance", "SP500"): "^GSPC"}


@dataclass(frozen=True)
class BacktestOutcome:
    """What a stored backtest run produced."""

    run_id: str
    report_path: Path
    start: dt.date
    end: dt.date
    strategy: str
    metrics: dict[str, float | None]
    benchmark: str | None
    benchmark_metrics: dict[str, float | None] | None
    fills: int
    config_hash: str
    tools: dict | None = None

    def to_json(self) -> dict:
        return {
            "tools": self.tools,
            "run_id": self.run_id,
            "report_path": str(self.report_path),
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "strategy": self.strategy,
            "config_hash": self.config_hash,
            "metrics": self.metrics,
            "benchmark_ticker": self.benchmark,
            "benchmark": self.benchmark_metrics,
            "fills": self.fills,
        }


def benchmark_symbol(config: QuantorchConfig) -> str | None:
    """The benchmark ticker for the configured source (None when disabled)."""
    name = config.benchmark
    if name in {"", "NONE"}:
        return None
    return _BENCHMARK_ALIASES.get((config.data.source, name), name)


def _clean(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in metrics.items()}


@dataclass(frozen=True)
class Simulated:
    """A computed (not yet stored) backtest."""

    strategy_name: str
    start: dt.date
    end: dt.date
    result: SimulationResult
    metrics: dict[str, float | None]
    benchmark: str | None
    bench_equity: pd.Series | None
    bench_metrics: dict[str, float | None] | None
    decisions: pd.DataFrame | None
    tool_calls: pd.DataFrame | None
    tools: dict | None


def simulate_config(
    config: QuantorchConfig,
    store: Store,
    *,
    strategy: Strategy | None = None,
    status: Callable[[str], None] | None = None,
) -> Simulated:
    """Load data, run the strategy and the engine, compute metrics; store nothing."""
    say = status or (lambda _msg: None)
    source = config.data.source
    if config.backtest.start is None:
        raise DateRangeError("no start date: pass --start (e.g. --start 2020)")
    benchmark = benchmark_symbol(config)
    tickers = list(config.universe)
    wanted = tickers + ([benchmark] if benchmark and benchmark not in tickers else [])

    provider = get_provider(source)
    available = provider.available() if provider is not None else stored_coverage(store, source)
    if available is not None:
        check_known_tickers(wanted, list(available), source)
    start, end = resolve_window(available, tickers, config.backtest.start, config.backtest.end, source)
    strategy = strategy or build_strategy(config, store)
    data_start = calendar.shift_sessions(start, -strategy.warmup_sessions).date()

    say("loading prices")
    ensure_prices(store, source, wanted, data_start, end, provider=provider, on_request=say)
    panel = load_panel(store, source, tickers, data_start, end)
    decision_dates = _decision_dates(panel, start, config.backtest.rebalance)
    if len(decision_dates) == 0:
        raise DateRangeError(f"no trading session between {start} and {end}; widen the dates")

    say(f"computing {strategy.name} target weights")
    weights = strategy.target_weights(panel, decision_dates)
    trading = _from(panel, start)
    say(f"simulating {len(trading.dates)} sessions x {len(tickers)} tickers")
    costs = Costs(fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps)
    result = simulate(trading, weights, costs, config.backtest.initial_cash)
    equity = result.equity
    metrics = _clean(performance_metrics(equity, result.fills, result.gross_exposure))
    log = getattr(strategy, "log", None)
    decisions, tool_calls = log.frames() if log is not None else (None, None)
    tools = None
    if decisions is not None:
        tools = tool_usage(decisions, tool_calls, result.fills, equity)

    bench_equity = None
    bench_metrics = None
    if benchmark:
        bench_close = load_panel(store, source, [benchmark], start, end).close[benchmark]
        bench_close = bench_close.reindex(equity.index).ffill().dropna()
        if not bench_close.empty:
            bench_equity = bench_close / bench_close.iloc[0] * config.backtest.initial_cash
            bench_metrics = _clean(performance_metrics(bench_equity))
    return Simulated(
        strategy_name=strategy.name,
        start=equity.index[0].date(),
        end=equity.index[-1].date(),
        result=result,
        metrics=metrics,
        benchmark=benchmark,
        bench_equity=bench_equity,
        bench_metrics=bench_metrics,
        decisions=decisions,
        tool_calls=tool_calls,
        tools=tools,
    )


def run_backtest(
    config: QuantorchConfig,
    store: Store,
    *,
    status: Callable[[str], None] | None = None,
) -> BacktestOutcome:
    """Run, store and report one backtest of ``config`` (its ``backtest.start``/``end``)."""
    say = status or (lambda _msg: None)
    sim = simulate_config(config, store, status=status)
    source = config.data.source
    tickers = list(config.universe)
    result, equity, metrics = sim.result, sim.result.equity, sim.metrics
    benchmark, bench_equity, bench_metrics = sim.benchmark, sim.bench_equity, sim.bench_metrics
    decisions, tool_calls, tools = sim.decisions, sim.tool_calls, sim.tools
    strategy_name = sim.strategy_name

    run_id = _new_run_id()
    config_hash = config.config_hash()
    first, last = equity.index[0].date(), equity.index[-1].date()
    meta = {
        "run id": run_id,
        "period": f"{first} to {last}",
        "strategy": strategy_name,
        "universe": ", ".join(tickers),
        "benchmark": benchmark or "none",
        "source": source,
        "rebalance": config.backtest.rebalance,
        "costs": f"fee {config.costs.fee_bps:g} bps, slippage {config.costs.slippage_bps:g} bps",
        "initial cash": f"{config.backtest.initial_cash:,.0f}",
        "seed": str(config.seed),
        "config hash": config_hash,
        "code version": code_version(),
    }
    say("writing report")
    report_path = Path(config.reports_dir) / f"{run_id}.html"
    write_report(
        report_path,
        title=f"quantorch backtest {run_id}: {strategy_name}",
        equity=equity,
        benchmark_equity=bench_equity,
        metrics=metrics,
        benchmark_metrics=bench_metrics,
        fills=result.fills,
        meta=meta,
        tools=tools,
    )
    try:
        _store_run(
            store,
            run_id=run_id,
            config=config,
            strategy=strategy_name,
            benchmark=benchmark,
            first=first,
            last=last,
            metrics=metrics,
            bench_metrics=bench_metrics,
            report_path=report_path,
            result=result,
            bench_equity=bench_equity,
            decisions=decisions,
            tool_calls=tool_calls,
        )
    except BaseException:
        report_path.unlink(missing_ok=True)
        raise
    return BacktestOutcome(
        run_id=run_id,
        report_path=report_path.resolve(),
        start=first,
        end=last,
        strategy=strategy_name,
        metrics=metrics,
        benchmark=benchmark,
        benchmark_metrics=bench_metrics,
        fills=len(result.fills),
        config_hash=config_hash,
        tools=tools,
    )


def build_strategy(config: QuantorchConfig, store: Store) -> Strategy:
    """The configured strategy: an orchestrator (default) or a classic rule strategy."""
    name = config.backtest.strategy
    if name == ORCHESTRATOR:
        from quantorch.orchestrator.factory import build_orchestrator_strategy

        return build_orchestrator_strategy(config, store)
    return get_strategy(name, config.strategies.get(name))


def tool_usage(
    decisions: pd.DataFrame, tool_calls: pd.DataFrame, fills: pd.DataFrame, equity: pd.Series
) -> dict:
    """Tool-call mix, cost per decision and in bps of traded notional, P&L by tools used.

    P&L attribution: each decision's target weight x its forward return over the horizon
    (from the fill) x equity at the decision, summed by the set of tools the decision called
    ("none" when it called nothing). Decisions whose horizon runs past the data are left out.
    """
    n_decisions = len(decisions)
    n_calls = len(tool_calls)
    total_cost = float(tool_calls["cost_usd"].sum()) if n_calls else 0.0
    traded = float(fills["notional"].sum()) if len(fills) else 0.0
    mix = (
        tool_calls.groupby(tool_calls["tool"] + ":" + tool_calls["provider"]).size() / n_calls
        if n_calls
        else pd.Series(dtype=float)
    )
    attribution: dict[str, float] = {}
    if n_decisions:
        frame = decisions.dropna(subset=["forward_return"]) if "forward_return" in decisions else decisions.iloc[0:0]
        if len(frame):
            equity_at = equity.reindex(pd.to_datetime(frame["decision_date"])).ffill().to_numpy()
            pnl = frame["target_weight"].to_numpy() * frame["forward_return"].to_numpy() * equity_at
            keys = frame["tools_called"].map(lambda t: "+".join(sorted({s.split(":")[0] for s in t})) or "none")
            attribution = {k: float(v) for k, v in pd.Series(pnl, index=keys.to_numpy()).groupby(level=0).sum().items()}
    return {
        "decisions": n_decisions,
        "tool_calls": n_calls,
        "calls_per_decision": n_calls / n_decisions if n_decisions else 0.0,
        "tool_cost_usd": total_cost,
        "tool_cost_per_decision_usd": total_cost / n_decisions if n_decisions else 0.0,
        "tool_cost_bps_of_traded_notional": total_cost / traded * 1e4 if traded else None,
        "tool_mix": {k: float(v) for k, v in mix.sort_values(ascending=False).items()},
        "pnl_attribution_usd": attribution,
    }


def _decision_dates(panel: PricePanel, start: dt.date, rebalance: str) -> pd.DatetimeIndex:
    """The first session on or after ``start`` (initial allocation), then each period end."""
    dates = panel.close.index[panel.close.index >= pd.Timestamp(start)]
    if len(dates) == 0:
        return dates
    ends = calendar.period_ends(dates, rebalance)
    return pd.DatetimeIndex([dates[0]]).union(ends)


def _from(panel: PricePanel, start: dt.date) -> PricePanel:
    cut = slice(pd.Timestamp(start), None)
    return PricePanel(
        close=panel.close.loc[cut],
        open=panel.open.loc[cut],
        high=panel.high.loc[cut],
        low=panel.low.loc[cut],
        volume=panel.volume.loc[cut],
    )


def _new_run_id() -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"bt-{stamp}-{uuid.uuid4().hex[:6]}"


def _store_run(
    store: Store,
    *,
    run_id: str,
    config: QuantorchConfig,
    strategy: str,
    benchmark: str | None,
    first: dt.date,
    last: dt.date,
    metrics: dict,
    bench_metrics: dict | None,
    report_path: Path,
    result: SimulationResult,
    bench_equity: pd.Series | None,
    decisions: pd.DataFrame | None = None,
    tool_calls: pd.DataFrame | None = None,
) -> None:
    equity = pd.DataFrame(
        {
            "run_id": run_id,
            "date": result.equity.index.date,
            "equity": result.equity.to_numpy(),
            "cash": result.cash.reindex(result.equity.index).to_numpy(),
            "gross_exposure": result.gross_exposure.reindex(result.equity.index).to_numpy(),
            "benchmark_equity": (
                bench_equity.reindex(result.equity.index).to_numpy()
                if bench_equity is not None
                else None  # stored as NULL: no benchmark
            ),
        }
    )
    fills = result.fills.reset_index(drop=True).copy()
    fills.insert(0, "fill_id", range(len(fills)))
    fills.insert(0, "run_id", run_id)
    with store.transaction() as con:
        con.execute(
            "INSERT INTO runs VALUES (?, 'backtest', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                dt.datetime.now(dt.UTC).replace(tzinfo=None),
                strategy,
                config.data.source,
                list(config.universe),
                benchmark,
                first,
                last,
                config.backtest.rebalance,
                config.seed,
                config.config_hash(),
                config.model_dump_json(),
                code_version(),
                json.dumps(metrics),
                json.dumps(bench_metrics) if bench_metrics is not None else None,
                str(report_path.resolve()),
            ],
        )
        con.register("_equity", equity)
        con.execute("INSERT INTO equity SELECT * FROM _equity")
        con.unregister("_equity")
        if len(fills):
            con.register("_fills", fills)
            con.execute(
                "INSERT INTO fills SELECT run_id, fill_id, CAST(decision_date AS DATE), "
                "CAST(fill_date AS DATE), ticker, side, quantity, fill_price, notional, fees, "
                "slippage_cost FROM _fills"
            )
            con.unregister("_fills")
        if decisions is not None and len(decisions):
            rows = decisions.drop(columns=["forward_return"], errors="ignore").copy()
            rows.insert(0, "run_id", run_id)
            con.register("_decisions", rows)
            con.execute(
                "INSERT INTO decisions SELECT run_id, decision_id, orchestrator, profile, ticker, "
                "decision_date, fill_date, horizon, tools_called, n_calls, tool_cost_usd, "
                "proposed_position, target_weight, guard_note, rationale, reward FROM _decisions"
            )
            con.unregister("_decisions")
        if tool_calls is not None and len(tool_calls):
            calls = tool_calls.copy()
            calls.insert(0, "run_id", run_id)
            calls.insert(0, "call_id", [f"{run_id}-{i}" for i in range(len(calls))])
            calls["created_at"] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            con.register("_calls", calls)
            con.execute(
                "INSERT INTO tool_calls SELECT call_id, run_id, tool, provider, ticker, as_of, "
                "arguments, outputs, summary, coverage, cost_usd, latency_ms, cache_hit, error, "
                "NULL, NULL, created_at FROM _calls"
            )
            con.unregister("_calls")

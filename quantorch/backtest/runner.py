"""One backtest from a config: data -> strategy -> engine -> metrics -> store -> report.

This is what the CLI calls; it owns no I/O of its own beyond the store and the report, and it
writes nothing until the whole run has been computed. The run, its daily equity, fills,
decisions and tool calls are stored in one transaction; only then is the report written
(atomically, from the same values), so a report never exists without its run. A crash between
the two leaves a stored run without a report, which ``quantorch report RUN_ID`` regenerates;
a crash while the report is written leaves a temporary file named after the writer's PID,
removed by the next run (:func:`~quantorch.backtest.report.remove_stale_partials`).

Every run is compared with its benchmark, labelled for what it is (the sample's S&P 500 is a
price index, without dividends), and with the equal-weight buy-and-hold of its own universe:
the same engine and costs, a total-return comparison when prices are adjusted.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from quantorch.backtest.driver import check_agreement, walk
from quantorch.backtest.engine import Costs, SimulationResult, simulate, simulate_orders
from quantorch.backtest.metrics import performance_metrics
from quantorch.backtest.report import Comparison, ReportData, remove_stale_partials, write_report
from quantorch.config import ORCHESTRATOR, QuantorchConfig
from quantorch.data import calendar
from quantorch.data.panel import PricePanel
from quantorch.data.providers import benchmark_label, get_provider
from quantorch.data.service import (
    check_known_tickers,
    ensure_prices,
    load_panel,
    resolve_window,
    stored_coverage,
)
from quantorch.errors import DateRangeError, QuantorchError, UserInputError
from quantorch.orchestrator import check_orchestrator_name
from quantorch.orchestrator.profiles import load_profile
from quantorch.progress import SILENT, Progress
from quantorch.store import Store, code_version, repository
from quantorch.strategies import get_strategy

if TYPE_CHECKING:
    from quantorch.kernel.participants import Participant

__all__ = [
    "BacktestOutcome",
    "Simulated",
    "check_names",
    "equal_weight_label",
    "report_data",
    "run_backtest",
    "run_meta",
    "simulate_config",
    "llm_training_window",
    "tool_usage",
]

#: Columns of the tool-call rows a run stores (``decision_step``'s rows).
_TOOL_CALL_FIELDS = (
    "tool", "provider", "ticker", "as_of", "arguments", "outputs", "summary", "coverage",
    "cost_usd", "latency_ms", "cache_hit", "error", "input_tokens", "output_tokens",
    "decision_id", "executor",
)  # fmt: skip


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
    benchmark_label: str | None
    benchmark_metrics: dict[str, float | None] | None
    equal_weight_label: str
    equal_weight_metrics: dict[str, float | None]
    fills: int
    config_hash: str
    tools: dict | None = None
    #: Why the report could not be written (the run is stored; ``quantorch report`` retries).
    report_error: str | None = None
    #: Set when an llm orchestrator ran over a period its training data covers.
    training_window: dict | None = None

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "report_path": None if self.report_error else str(self.report_path),
            "report_error": self.report_error,
            "period": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            "strategy": self.strategy,
            "config_hash": self.config_hash,
            "metrics": self.metrics,
            "benchmark_ticker": self.benchmark,
            "benchmark_label": self.benchmark_label,
            "benchmark": self.benchmark_metrics,
            "equal_weight": {"label": self.equal_weight_label, "metrics": self.equal_weight_metrics},
            "fills": self.fills,
            "tools": self.tools,
            "training_window": self.training_window,
        }


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
    #: The equal-weight buy-and-hold of the universe, same engine and costs.
    equal_weight: SimulationResult | None = None
    equal_weight_metrics: dict[str, float | None] | None = None
    #: The llm orchestrator's conversations (rows of ``llm_transcripts``), if it decided.
    transcripts: pd.DataFrame | None = None
    #: Set when the llm orchestrator ran over a period its training data covers.
    training_window: dict | None = None

    @property
    def benchmark_label(self) -> str | None:
        return benchmark_label(self.benchmark) if self.benchmark else None


def equal_weight_label(n_tickers: int) -> str:
    """How the equal-weight comparison is labelled everywhere it is shown."""
    return (
        f"Equal-weight buy-and-hold of the {n_tickers} stock{'s' if n_tickers != 1 else ''} "
        "(same prices and costs, no RiskGuard)"
    )


def simulate_config(
    config: QuantorchConfig,
    store: Store,
    *,
    participant: Participant | None = None,
    progress: Progress = SILENT,
) -> Simulated:
    """Load data, run the strategy and the engine, compute metrics; store nothing."""
    source = config.data.source
    if config.backtest.start is None:
        raise DateRangeError("no start date: pass --start (e.g. --start 2020)")
    benchmark = config.benchmark_symbol
    tickers = list(config.universe)
    wanted = tickers + ([benchmark] if benchmark and benchmark not in tickers else [])

    if participant is None:
        check_names(config)  # about a second: before any heavy import or data load
    provider = get_provider(source)
    available = provider.available() if provider is not None else stored_coverage(store, source)
    if available is not None:
        check_known_tickers(wanted, list(available), source)
    start, end = resolve_window(available, tickers, config.backtest.start, config.backtest.end, source)
    if participant is None:
        # deferred: the kernel imports torch and gymnasium (seconds); the cheap checks above
        # must answer a typo before that
        from quantorch.kernel.factory import build_participant

        participant = build_participant(config, store)
    data_start = calendar.shift_sessions(start, -participant.warmup_sessions).date()

    progress.phase("loading prices")
    ensure_prices(store, source, wanted, data_start, end, provider=provider,
                  on_request=lambda message: progress.phase(message))
    panel = load_panel(store, source, tickers, data_start, end)
    decision_dates = _decision_dates(panel, start, config.backtest.rebalance)
    if len(decision_dates) == 0:
        raise DateRangeError(f"no trading session between {start} and {end}; widen the dates")

    costs = Costs(fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps)
    participant.prepare(panel, decision_dates, progress)
    trading = _from(panel, start)
    try:
        walked = walk(trading, decision_dates, participant.step, costs,
                      config.backtest.initial_cash, progress)
    finally:
        participant.close()
    progress.phase(f"recording {len(trading.dates)} sessions x {len(tickers)} tickers (vectorbt)")
    result = simulate_orders(trading, walked.orders, costs, config.backtest.initial_cash,
                             bills=walked.bills)
    check_agreement(walked.equity, result.equity)
    equity = result.equity
    metrics = _clean(performance_metrics(equity, result.fills, result.gross_exposure))
    decisions = tool_calls = tools = transcripts = None
    if walked.decisions:
        decisions = pd.DataFrame(walked.decisions)
        tool_calls = pd.DataFrame(walked.tool_calls, columns=_TOOL_CALL_FIELDS)
        transcripts = pd.DataFrame(walked.transcripts) if walked.transcripts else None
        tools = tool_usage(decisions, tool_calls, result.fills, equity, transcripts)
        # what the equity curve paid for the decisions (kernel "Decision bills")
        tools["debited_from_equity_usd"] = float(walked.bills.sum())

    hold = get_strategy("buy-and-hold").target_weights(trading, decision_dates[:1])
    equal_weight = simulate(trading, hold, costs, config.backtest.initial_cash)
    equal_weight_metrics = _clean(
        performance_metrics(equal_weight.equity, equal_weight.fills, equal_weight.gross_exposure)
    )

    bench_equity = None
    bench_metrics = None
    if benchmark:
        bench_close = load_panel(store, source, [benchmark], start, end).close[benchmark]
        bench_close = bench_close.reindex(equity.index).ffill().dropna()
        if not bench_close.empty:
            bench_equity = bench_close / bench_close.iloc[0] * config.backtest.initial_cash
            bench_metrics = _clean(performance_metrics(bench_equity))
    return Simulated(
        strategy_name=participant.name,
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
        equal_weight=equal_weight,
        equal_weight_metrics=equal_weight_metrics,
        transcripts=transcripts,
        training_window=llm_training_window(config.model_dump(mode="json"),
                                            equity.index[0].date(), equity.index[-1].date()),
    )


def llm_training_window(config: dict, start: dt.date, end: dt.date) -> dict | None:
    """The training-window flag of a run whose (JSON) config is ``config``: set when the llm
    orchestrator decided over a period before its model's training-data cutoff."""
    if config.get("backtest", {}).get("strategy") != ORCHESTRATOR:
        return None
    if config.get("orchestrator", {}).get("name") != "llm":
        return None
    from quantorch.llm.window import training_window

    llm = config.get("llm") or {}
    cutoff = llm.get("training_cutoff")
    return training_window(str(llm.get("model")), dt.date.fromisoformat(cutoff) if cutoff else None,
                           start, end)


def run_meta(
    *,
    run_id: str,
    first: dt.date,
    last: dt.date,
    strategy: str,
    universe: list[str],
    benchmark: str | None,
    source: str,
    rebalance: str,
    fee_bps: float,
    slippage_bps: float,
    initial_cash: float,
    seed: int,
    config_hash: str,
    code: str,
) -> dict[str, str]:
    """The facts a report's header shows, in order."""
    shown = ", ".join(universe) if len(universe) <= 30 else (
        f"{', '.join(universe[:30])} and {len(universe) - 30} more"
    )
    return {
        "run id": run_id,
        "period": f"{first} to {last}",
        "strategy": strategy,
        "universe": f"{shown} ({len(universe)} tickers)",
        "benchmark": f"{benchmark}: {benchmark_label(benchmark)}" if benchmark else "none",
        "source": source,
        "rebalance": rebalance,
        "costs": f"fee {fee_bps:g} bps, slippage {slippage_bps:g} bps (always charged)",
        "initial cash": f"{initial_cash:,.0f}",
        "seed": str(seed),
        "config hash": config_hash,
        "code version": code,
    }


def report_data(sim: Simulated, meta: dict[str, str], title: str) -> ReportData:
    """What the HTML report of a computed run shows."""
    comparisons = []
    if sim.bench_equity is not None and sim.bench_metrics is not None:
        comparisons.append(
            Comparison("benchmark", sim.benchmark_label or "benchmark", sim.bench_equity,
                       sim.bench_metrics)
        )
    if sim.equal_weight is not None and sim.equal_weight_metrics is not None:
        comparisons.append(
            Comparison("equal_weight", equal_weight_label(len(sim.result.weights.columns)),
                       sim.equal_weight.equity, sim.equal_weight_metrics)
        )
    if sim.training_window is not None:
        meta = {**meta, "training window": sim.training_window["message"]}
    return ReportData(
        title=title,
        meta=meta,
        equity=sim.result.equity,
        cash=sim.result.cash,
        weights=sim.result.weights,
        metrics=sim.metrics,
        comparisons=comparisons,
        fills=sim.result.fills,
        tools=sim.tools,
        tool_calls=sim.tool_calls,
    )


def run_backtest(
    config: QuantorchConfig,
    store: Store,
    *,
    progress: Progress = SILENT,
) -> BacktestOutcome:
    """Run, store and report one backtest of ``config`` (its ``backtest.start``/``end``)."""
    reports = Path(config.reports_dir)
    remove_stale_partials(reports)
    sim = simulate_config(config, store, progress=progress)
    tickers = list(config.universe)
    equity = sim.result.equity
    run_id = _new_run_id()
    config_hash = config.config_hash()
    first, last = equity.index[0].date(), equity.index[-1].date()
    report_path = (reports / f"{run_id}.html").resolve()
    progress.phase("storing the run")
    _store_run(store, run_id=run_id, config=config, sim=sim, report_path=report_path)

    progress.phase("writing the report")
    meta = run_meta(
        run_id=run_id, first=first, last=last, strategy=sim.strategy_name, universe=tickers,
        benchmark=sim.benchmark, source=config.data.source, rebalance=config.backtest.rebalance,
        fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps,
        initial_cash=config.backtest.initial_cash, seed=config.seed, config_hash=config_hash,
        code=code_version(),
    )
    report_error = None
    try:
        write_report(report_path, report_data(sim, meta, f"quantorch backtest {run_id}: "
                                                         f"{sim.strategy_name}"))
    except (OSError, QuantorchError) as exc:  # the run is stored: say so, keep going
        report_error = f"{type(exc).__name__}: {exc}"
    return BacktestOutcome(
        run_id=run_id,
        report_path=report_path,
        start=first,
        end=last,
        strategy=sim.strategy_name,
        metrics=sim.metrics,
        benchmark=sim.benchmark,
        benchmark_label=sim.benchmark_label,
        benchmark_metrics=sim.bench_metrics,
        equal_weight_label=equal_weight_label(len(tickers)),
        equal_weight_metrics=sim.equal_weight_metrics or {},
        fills=len(sim.result.fills),
        config_hash=config_hash,
        tools=sim.tools,
        report_error=report_error,
        training_window=sim.training_window,
    )


def check_names(config: QuantorchConfig) -> None:
    """The strategy or orchestrator, profile and checkpoint a run names exist (cheap checks)."""
    name = config.backtest.strategy
    if name != ORCHESTRATOR:
        get_strategy(name, config.strategies.get(name))
        return
    check_orchestrator_name(config.orchestrator.name)
    load_profile(config.orchestrator.profile)
    for flag, path in (("--checkpoint", config.orchestrator.checkpoint),
                       ("orchestrator.all_tools_checkpoint", config.orchestrator.all_tools_checkpoint)):
        if path is not None and not Path(path).is_file():
            raise UserInputError(
                f"{flag} {path}: no such file (pass a checkpoint written by `quantorch train --out`)"
            )


def tool_usage(
    decisions: pd.DataFrame, tool_calls: pd.DataFrame, fills: pd.DataFrame, equity: pd.Series,
    transcripts: pd.DataFrame | None = None,
) -> dict:
    """Tool-call mix, cost per decision and in bps of traded notional, P&L by tools used;
    with the llm orchestrator's ``transcripts``, its tokens, cost, fallbacks and cache hits too
    (``decision_cost_*`` adds the model's tokens to the tools' bill).

    ``answered_calls`` counts the calls whose tool had data (``coverage``); the others were not
    charged and told the decision nothing.

    P&L attribution: each decision's target weight x its forward return over the horizon
    (from the fill) x equity at the decision, summed by the set of tools the decision called
    ("none" when it called nothing). Decisions whose horizon runs past the data are left out.
    """
    n_decisions = len(decisions)
    n_calls = len(tool_calls)
    # calls whose tool had data: the others (sentiment without news...) were free and empty
    answered = (int(tool_calls["coverage"].astype(bool).sum())
                if n_calls and "coverage" in tool_calls else n_calls)
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
    llm = llm_usage(transcripts)
    # the decisions' own token cost (priced whether or not the transcript cache answered)
    model_cost = (float(decisions["llm_cost_usd"].fillna(0.0).sum())
                  if n_decisions and "llm_cost_usd" in decisions else 0.0)
    decision_cost = total_cost + model_cost
    return {
        "decisions": n_decisions,
        "tool_calls": n_calls,
        "calls_per_decision": n_calls / n_decisions if n_decisions else 0.0,
        "answered_calls": answered,
        "tool_cost_usd": total_cost,
        "tool_cost_per_decision_usd": total_cost / n_decisions if n_decisions else 0.0,
        "tool_cost_bps_of_traded_notional": total_cost / traded * 1e4 if traded else None,
        "decision_cost_usd": decision_cost,
        "decision_cost_per_decision_usd": decision_cost / n_decisions if n_decisions else 0.0,
        "tool_mix": {k: float(v) for k, v in mix.sort_values(ascending=False).items()},
        "pnl_attribution_usd": attribution,
        "llm": llm,
    }


def llm_usage(transcripts: pd.DataFrame | None) -> dict | None:
    """The llm orchestrator's own bill and behaviour over a run (None for other deciders)."""
    if transcripts is None or not len(transcripts):
        return None
    n = len(transcripts)
    tokens = transcripts["prompt_tokens"] + transcripts["completion_tokens"]
    rounds = int(transcripts["rounds"].sum())
    return {
        "model": str(transcripts["model"].iloc[0]),
        "decisions": n,
        "prompt_tokens": int(transcripts["prompt_tokens"].sum()),
        "completion_tokens": int(transcripts["completion_tokens"].sum()),
        "tokens_per_decision": float(tokens.mean()),
        "cost_usd": float(transcripts["cost_usd"].sum()),
        "cost_per_decision_usd": float(transcripts["cost_usd"].mean()),
        "requests": rounds,
        "cached_requests": int(transcripts["cached_rounds"].sum()),
        "cache_hit_rate": float(transcripts["cached_rounds"].sum() / rounds) if rounds else 0.0,
        "fallbacks": int(transcripts["fallback"].notna().sum()),
        "fallback_rate": float(transcripts["fallback"].notna().mean()),
        "corrections": int(transcripts["corrections"].sum()),
        "latency_ms_per_decision": float(transcripts["latency_ms"].mean()),
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
    sim: Simulated,
    report_path: Path,
) -> None:
    """The run, its equity, fills, decisions and tool calls, in one transaction."""
    result = sim.result
    index = result.equity.index

    def aligned(series: pd.Series | None):
        return None if series is None else series.reindex(index).to_numpy()

    equity = pd.DataFrame(
        {
            "run_id": run_id,
            "date": index.date,
            "equity": result.equity.to_numpy(),
            "cash": result.cash.reindex(index).to_numpy(),
            "gross_exposure": result.gross_exposure.reindex(index).to_numpy(),
            # stored as NULL without a benchmark
            "benchmark_equity": aligned(sim.bench_equity),
            "equal_weight_equity": aligned(
                sim.equal_weight.equity if sim.equal_weight is not None else None
            ),
        }
    )
    fills = result.fills.reset_index(drop=True).copy()
    fills.insert(0, "fill_id", range(len(fills)))
    fills.insert(0, "run_id", run_id)
    decisions, tool_calls = sim.decisions, sim.tool_calls
    run = repository.RunRecord(
        run_id=run_id, kind="backtest", strategy=sim.strategy_name, source=config.data.source,
        universe=tuple(config.universe), benchmark=sim.benchmark,
        benchmark_label=sim.benchmark_label, start_date=sim.start, end_date=sim.end,
        rebalance=config.backtest.rebalance, seed=config.seed, config_hash=config.config_hash(),
        config=config.model_dump_json(), code_version=code_version(), metrics=sim.metrics,
        benchmark_metrics=sim.bench_metrics, equal_weight_metrics=sim.equal_weight_metrics,
        report_path=str(report_path),
    )
    with store.transaction() as con:
        repository.insert_run(con, run)
        repository.insert_equity(con, equity)
        if len(fills):
            repository.insert_fills(con, fills)
        if decisions is not None and len(decisions):
            repository.insert_decisions(con, decisions.assign(run_id=run_id))
        if tool_calls is not None and len(tool_calls):
            calls = tool_calls.copy()
            calls.insert(0, "run_id", run_id)
            calls.insert(0, "call_id", [f"{run_id}-{i}" for i in range(len(calls))])
            calls["created_at"] = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            repository.insert_tool_calls(con, calls)
        if sim.transcripts is not None and len(sim.transcripts):
            repository.insert_transcripts(con, sim.transcripts.assign(run_id=run_id))

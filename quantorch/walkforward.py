"""``quantorch evaluate --walk-forward``: yearly refits, out-of-sample years stitched together.

One fold per test year ``Y``: the policy (and the all-tools decision head when ``all-tools``
is evaluated) is trained on the years ``Y - train_years - 1 .. Y - 2`` (or from
``training.train_start`` with ``train_years=None``), validated on ``Y - 1`` and then every
orchestrator x profile (and buy-and-hold) is backtested on ``Y`` with those checkpoints. The
test years' daily returns are stitched into one out-of-sample series per orchestrator and
profile, on which the Sharpe differences (paired stationary bootstrap) and the Deflated Sharpe
Ratio are computed (:mod:`quantorch.backtest.metrics`), the product's targets checked
(:func:`walk_forward_targets`) and the HTML report written (:mod:`quantorch.walkforward_report`).

Folds are independent jobs behind a :class:`concurrent.futures.Executor` (local processes,
inline, or a Dask cluster). A fold works on its own copy of the database (DuckDB allows one
writer per file) and *returns* its results; only the parent writes, one JSON file per fold in
the sweep folder (atomically), so an interrupted sweep resumes where it stopped. See
docs/walkforward.md.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quantorch.backtest import metrics
from quantorch.config import ORCHESTRATOR, QuantorchConfig
from quantorch.errors import UserInputError
from quantorch.orchestrator.profiles import TraderProfile, list_profiles
from quantorch.progress import SILENT, Progress
from quantorch.store import Store

__all__ = [
    "COMPARED_AGAINST",
    "Fold",
    "WalkForward",
    "WalkForwardRow",
    "describe_target",
    "fold_layout",
    "make_executor",
    "run_fold",
    "walk_forward",
    "walk_forward_targets",
]

#: The baselines each orchestrator's stitched Sharpe is compared with (those evaluated).
COMPARED_AGAINST = ("buy-and-hold", "all-tools", "free-tools", "random")
_RULES = ("buy-and-hold",)
_FORMAT = 2  # bump when a fold file's content changes meaning (2: tool_calls_per_decision)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train, validation and test periods (inclusive dates)."""

    test_year: int
    train_start: dt.date
    train_end: dt.date
    val_start: dt.date
    val_end: dt.date
    test_start: dt.date
    test_end: dt.date

    def __post_init__(self) -> None:
        # the guarantee the whole evaluation rests on: no day is in two periods, in time order
        if not (self.train_start < self.train_end < self.val_start <= self.val_end
                < self.test_start <= self.test_end):
            raise AssertionError(f"fold {self.test_year}: train, validation and test overlap "
                                 f"or are out of order: {self.to_json()}")

    def to_json(self) -> dict:
        return {k: (v.isoformat() if isinstance(v, dt.date) else v)
                for k, v in self.__dict__.items()}


def fold_layout(start_year: int, end_year: int, train_years: int | None,
                data_start: dt.date) -> list[Fold]:
    """The yearly folds for test years ``start_year .. end_year``.

    ``train_years=None`` trains on every year from ``data_start`` to ``Y - 2``; otherwise on
    the ``train_years`` years before the validation year (clipped at ``data_start``).
    """
    if end_year < start_year:
        raise UserInputError(f"--end {end_year} is before --start {start_year}")
    if train_years is not None and train_years < 1:
        raise UserInputError(f"--train-years must be at least 1 (or 'all'), got {train_years}")
    folds = []
    for year in range(start_year, end_year + 1):
        first = data_start if train_years is None else max(
            data_start, dt.date(year - 1 - train_years, 1, 1))
        if first >= dt.date(year - 2, 12, 31):
            raise UserInputError(
                f"test year {year} leaves no training year after the data start {data_start} "
                f"(training ends {year - 2}-12-31, validation is {year - 1}); start the "
                f"walk-forward later (--start) or lower training.train_start"
            )
        folds.append(Fold(year, first, dt.date(year - 2, 12, 31), dt.date(year - 1, 1, 1),
                          dt.date(year - 1, 12, 31), dt.date(year, 1, 1), dt.date(year, 12, 31)))
    return folds


# --------------------------------------------------------------------------- the fold job


def run_fold(request: dict) -> dict:
    """Train and test one fold; return its results as a JSON-able dict (write nothing shared).

    ``request`` is plain data (picklable, JSON-able): ``config`` (the config as JSON),
    ``db_path``, ``fold`` (:meth:`Fold.to_json`), ``orchestrators``, ``profiles`` (profile
    JSON), ``settings`` (PPO settings), ``checkpoint_dir`` and ``threads`` (torch threads).
    The database is copied into a private temporary folder first, so concurrent folds never
    share a DuckDB writer. ``random`` is matched to the policy's realised tool cost per decision
    in the test year (:func:`quantorch.evaluation.simulate_matched_random`, as in ``quantorch
    evaluate``); its run carries the realised ratio as ``matched_cost_ratio``.
    """
    import torch

    torch.set_num_threads(int(request.get("threads", 1)))
    from quantorch.backtest.runner import simulate_config
    from quantorch.evaluation import simulate_matched_random
    from quantorch.kernel.factory import build_participant, load_policies
    from quantorch.training.pipeline import train_from_config
    from quantorch.training.ppo import PPOSettings

    config = QuantorchConfig.model_validate_json(request["config"])
    fold = {k: (dt.date.fromisoformat(v) if isinstance(v, str) else v)
            for k, v in request["fold"].items()}
    fold = Fold(**fold)
    orchestrators = list(request["orchestrators"])
    profiles = [TraderProfile.model_validate_json(p) for p in request["profiles"]]
    settings = PPOSettings(**request["settings"])
    checkpoints = Path(request["checkpoint_dir"])
    checkpoints.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)

    with tempfile.TemporaryDirectory(prefix=f"qt-fold-{fold.test_year}-") as scratch:
        db = Path(scratch) / "fold.duckdb"
        source = Path(request["db_path"])
        shutil.copy(source, db)
        wal = source.with_name(source.name + ".wal")
        if wal.exists():
            shutil.copy(wal, db.with_name(db.name + ".wal"))
        store = Store(db)
        cfg = config.with_overrides({
            "training.train_start": fold.train_start, "training.train_end": fold.train_end,
            "training.val_start": fold.val_start, "training.val_end": fold.val_end,
            "training.steps": settings.steps,
            "backtest.start": fold.test_start, "backtest.end": fold.test_end,
        })
        trained: dict = {}
        datasets: dict = {}  # the policy and the all-tools head share one panel computation
        learned = [o for o in orchestrators if o not in _RULES]
        if learned:
            policy = train_from_config(cfg, store, checkpoints / "policy.pt", settings=settings,
                                       datasets=datasets)
            trained["policy"] = _training_summary(policy)
            cfg = cfg.with_overrides({"orchestrator.checkpoint": policy.path})
        if "all-tools" in orchestrators:
            head = train_from_config(cfg, store, checkpoints / "all-tools.pt", all_tools=True,
                                     settings=settings, datasets=datasets)
            trained["all-tools"] = _training_summary(head)
            cfg = cfg.with_overrides({"orchestrator.all_tools_checkpoint": head.path})
        policies = load_policies(cfg, "all-tools" in orchestrators) if learned else None
        cache: dict = {}
        runs = []

        def backtest(name: str, profile: TraderProfile):
            if name in _RULES:
                run_cfg = cfg.with_overrides({"backtest.strategy": name})
            else:
                run_cfg = cfg.with_overrides({"backtest.strategy": ORCHESTRATOR,
                                              "orchestrator.name": name})
            participant = build_participant(run_cfg, store, seed=config.seed,
                                            policies=policies, cache=cache, profile=profile)
            return simulate_config(run_cfg, store, participant=participant)

        for profile in profiles:
            policy_run = None  # the policy's test-year run: its row and random's cost target
            for name in sorted(orchestrators, key=lambda n: n != "policy"):
                matched = None
                if name == "random":
                    # random spends what the policy spent in this test year (run for it if
                    # the policy is not evaluated), as in `quantorch evaluate`
                    policy_run = policy_run or backtest("policy", profile)
                    sim, matched = simulate_matched_random(cfg, store, policy_run, profile,
                                                           seed=config.seed, policies=policies,
                                                           cache=cache)
                else:
                    sim = backtest(name, profile)
                    policy_run = sim if name == "policy" else policy_run
                summary = _run_summary(name, profile.name, sim, cfg.backtest.initial_cash)
                if matched is not None:
                    summary["matched_cost_ratio"] = matched.ratio
                runs.append(summary)
    return {
        "format": _FORMAT,
        "fold": fold.to_json(),
        "trained": trained,
        "runs": runs,
        "started_at": started.isoformat(),
        "seconds": (dt.datetime.now(dt.UTC) - started).total_seconds(),
    }


def _training_summary(outcome) -> dict:
    result = outcome.result
    return {"checkpoint": str(outcome.path), "best_step": result.best_step,
            "best_validation_bps": result.best_validation, "steps_done": result.steps_done,
            "stopped_early": result.stopped_early, "seconds": result.seconds,
            "train_rows": outcome.train_rows, "validation_rows": outcome.validation_rows}


def _run_summary(name: str, profile: str, sim, initial_cash: float) -> dict:
    equity = sim.result.equity.dropna()
    values = equity.to_numpy(dtype=np.float64)
    # the first session's return is against the starting cash, so the stitched series has
    # one return per test session (and the first trade's costs are in it)
    returns = values / np.concatenate([[initial_cash], values[:-1]]) - 1.0
    exposure = sim.result.gross_exposure
    tools = sim.tools or {}
    return {
        "orchestrator": name,
        "profile": profile,
        "dates": [d.date().isoformat() for d in equity.index],
        "returns": [float(r) for r in returns],
        "exposure": float(exposure.reindex(equity.index).mean()) if exposure is not None else 1.0,
        "decisions": len(sim.decisions) if sim.decisions is not None else 0,
        "tool_cost_usd": float(tools.get("decision_cost_usd", tools.get("tool_cost_usd", 0.0))
                               or 0.0),
        "calls_per_decision": float(tools.get("calls_per_decision", 0.0) or 0.0),
        "tool_calls_per_decision": _tool_calls_per_decision(sim.decisions),
    }


def _tool_calls_per_decision(decisions: pd.DataFrame | None) -> dict[str, float]:
    """Per tool, the share of decisions that called it at least once ("technical:talib" is
    the tool "technical")."""
    if decisions is None or not len(decisions):
        return {}
    called = Counter(tool for calls in decisions["tools_called"]
                     for tool in {c.split(":")[0] for c in calls})
    return {tool: n / len(decisions) for tool, n in sorted(called.items())}


# --------------------------------------------------------------------------- executors


def _process_pool(workers: int) -> cf.ProcessPoolExecutor:
    # spawn, not fork: the parent has torch (and its thread pools) loaded
    import multiprocessing

    return cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"))


def make_executor(spec: str, workers: int) -> tuple[cf.Executor | None, object | None]:
    """``local`` -> a process pool of ``workers`` (None, i.e. inline, for one worker);
    ``dask://HOST:PORT`` -> that cluster's executor. Returns ``(executor, client)``; close
    the client (when not None) after the sweep."""
    if spec == "local":
        return (None if workers <= 1 else _process_pool(workers)), None
    if spec.startswith("dask://"):
        try:
            from dask.distributed import Client
        except ImportError as exc:
            raise UserInputError(
                "--executor dask://... needs dask.distributed: pip install 'quantorch[cluster]'"
            ) from exc
        address = "tcp://" + spec.removeprefix("dask://")
        try:
            client = Client(address, timeout=10)
        except OSError as exc:
            raise UserInputError(f"no Dask scheduler answers at {address} ({exc}); start one "
                                 f"with `dask scheduler` and `dask worker {address}`") from exc
        return client.get_executor(), client
    raise UserInputError(f"unknown --executor '{spec}'; use local or dask://HOST:PORT")


# --------------------------------------------------------------------------- the sweep


@dataclass
class WalkForwardRow:
    """Stitched out-of-sample figures for one (orchestrator, profile)."""

    orchestrator: str
    profile: str
    sessions: int
    sharpe: float
    sharpe_ci_bootstrap: tuple[float, float]
    cagr: float
    max_drawdown: float
    exposure: float
    decisions: int
    tool_cost_usd: float
    tool_cost_per_decision_usd: float
    calls_per_decision: float
    #: test year -> that fold's Sharpe (the figure's provenance)
    per_fold_sharpe: dict[int, float]
    deflated_sharpe: float
    #: tool -> share of decisions that called it at least once (all folds' decisions)
    tool_calls_per_decision: dict[str, float] = field(default_factory=dict)
    #: test year -> that fold's Sharpe 95% interval (stationary block bootstrap of its year)
    per_fold_sharpe_ci: dict[int, tuple[float, float]] = field(default_factory=dict)
    #: test year -> that fold's tool cost per decision (USD)
    per_fold_tool_cost_per_decision_usd: dict[int, float] = field(default_factory=dict)
    #: baseline name -> sharpe_difference (this row minus the baseline) with its interval
    versus: dict[str, dict] = field(default_factory=dict)
    returns: pd.Series | None = field(default=None, repr=False)

    @property
    def equity(self) -> pd.Series:
        assert self.returns is not None
        return (1.0 + self.returns).cumprod()

    def to_json(self) -> dict:
        return _clean({k: v for k, v in self.__dict__.items() if k != "returns"})


@dataclass
class WalkForward:
    sweep_dir: Path
    folds: list[Fold]
    rows: list[WalkForwardRow]
    trials: int
    computed_folds: list[int]
    reused_folds: list[int]
    fold_seconds: dict[int, float]
    trained: dict[int, dict]
    #: :func:`walk_forward_targets` of the rows
    targets: dict = field(default_factory=dict)
    #: the HTML report (:mod:`quantorch.walkforward_report`), once written
    report_path: Path | None = None

    @property
    def sweep_id(self) -> str:
        """``wf-<key>``: the sweep folder's name."""
        return self.sweep_dir.name

    def to_json(self) -> dict:
        return _clean({
            "sweep_dir": str(self.sweep_dir),
            "report_path": self.report_path,
            "folds": [f.to_json() for f in self.folds],
            "trials": self.trials,
            "computed_folds": self.computed_folds,
            "reused_folds": self.reused_folds,
            "fold_seconds": self.fold_seconds,
            "trained": self.trained,
            "results": [r.to_json() for r in self.rows],
            "targets": self.targets,
            "not_done": "refit schedules other than yearly; a Ray executor",
        })


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {(str(k) if not isinstance(k, str) else k): _clean(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def sweep_key(config: QuantorchConfig, *, train_years: int | None, refit: str, steps: int,
              orchestrators: Sequence[str], profiles: Sequence[TraderProfile],
              settings: dict) -> str:
    """Hash of everything a fold's result depends on except its test year (and paths), so
    widening the year range reuses the folds already computed. The code version is part of it
    (the release and, in a checkout, the commit and whether it has changes): a fold computed
    by other code, with another reward say, is never reused as if it were this code's."""
    from quantorch.store import code_version

    shaping = json.loads(config.model_dump_json(exclude={"database", "reports_dir", "paper"}))
    # each fold sets these itself: they do not change its result
    for section, keys in (("backtest", ("start", "end", "strategy")),
                          ("orchestrator", ("name", "checkpoint", "all_tools_checkpoint"))):
        for k in keys:
            shaping.get(section, {}).pop(k, None)
    payload = {
        "config": shaping,
        "train_years": train_years, "refit": refit, "steps": steps,
        "orchestrators": list(orchestrators),
        "profiles": [json.loads(p.model_dump_json()) for p in profiles],
        "settings": settings, "format": _FORMAT, "code_version": code_version(),
    }
    blob = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _write_atomically(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, allow_nan=False))
    os.replace(tmp, path)


def _settings(steps: int) -> dict:
    """PPO settings for ``steps``: the shipped defaults, with fewer parallel environments and
    more frequent validation for short runs (a rollout of 512 envs is 8,192 steps), so a
    short training still validates and keeps its best checkpoint. The policy and the
    all-tools head get the same settings (the same budget and stopping rule)."""
    if steps >= 200_000:
        return {"steps": steps}
    n_envs = 64
    return {"steps": steps, "n_envs": n_envs, "batch_size": n_envs * 4,
            "eval_every": max(1_000, min(50_000, steps // 4))}


def walk_forward(
    config: QuantorchConfig,
    store: Store,
    profiles: Sequence[TraderProfile],
    orchestrators: Sequence[str],
    *,
    start_year: int,
    end_year: int,
    train_years: int | None = None,
    refit: str = "yearly",
    executor: cf.Executor | None = None,
    workers: int = 1,
    steps: int | None = None,
    settings: dict | None = None,
    threads: int | None = None,
    progress: Progress = SILENT,
) -> WalkForward:
    """Run (or resume) a walk-forward sweep and stitch its out-of-sample years.

    Parameters
    ----------
    executor
        Where the folds run. None: inline with ``workers=1``, else a process pool of
        ``workers`` (closed afterwards). A given executor is used as is and left open.
    steps
        PPO steps per training (``training.steps`` when None).
    settings
        PPO settings (:class:`~quantorch.training.ppo.PPOSettings` fields); default scaled to
        ``steps``.
    threads
        Torch threads per fold (default 1: the policy network is small, and on 2 loaded cores
        a fold at 2 threads took 289 s against 98 s at 1, with the same results; more CPUs
        are used by running more folds, ``workers``).
    """
    if refit != "yearly":
        raise UserInputError(f"--refit '{refit}' is not supported; use yearly")
    if not orchestrators or not profiles:
        raise UserInputError("nothing to evaluate: give at least one orchestrator and profile")
    from quantorch.data import calendar
    from quantorch.data.providers.sample import FACTOR_ETFS
    from quantorch.data.service import ensure_prices
    from quantorch.orchestrator.slots import WARMUP_SESSIONS
    from quantorch.store import code_version

    steps = steps or config.training.steps
    settings = settings or _settings(steps)
    folds = fold_layout(start_year, end_year, train_years, config.training.train_start)
    key = sweep_key(config, train_years=train_years, refit=refit, steps=steps,
                    orchestrators=orchestrators, profiles=profiles, settings=settings)
    sweep = (Path(config.reports_dir) / f"wf-{key}").resolve()
    sweep.mkdir(parents=True, exist_ok=True)

    # every price any fold reads is loaded here, once: the folds then only read their copy
    progress.phase("loading prices for all folds")
    wanted = list(config.universe)
    if config.benchmark_symbol and config.benchmark_symbol not in wanted:
        wanted.append(config.benchmark_symbol)
    if config.data.source == "sample":
        wanted += [t for t in FACTOR_ETFS if t not in wanted]
    first = calendar.shift_sessions(folds[0].train_start, -WARMUP_SESSIONS).date()
    ensure_prices(store, config.data.source, wanted, first, folds[-1].test_end)

    results: dict[int, dict] = {}
    pending: list[Fold] = []
    for fold in folds:
        path = sweep / f"fold-{fold.test_year}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("format") == _FORMAT and saved.get("fold") == fold.to_json():
                results[fold.test_year] = saved
                continue
        pending.append(fold)
    threads = threads or 1
    base = {
        "config": config.model_dump_json(), "db_path": str(Path(store.path).resolve()),
        "orchestrators": list(orchestrators),
        "profiles": [p.model_dump_json() for p in profiles],
        "settings": settings, "threads": threads,
    }
    requests = [{**base, "fold": f.to_json(),
                 "checkpoint_dir": str(sweep / f"fold-{f.test_year}")} for f in pending]
    owned = None
    if executor is None and workers > 1 and len(requests) > 1:
        executor = owned = _process_pool(workers)
    try:
        progress.phase(f"walk-forward: {len(pending)} of {len(folds)} folds to run "
                       f"({len(results)} reused)")
        if executor is None:
            outcomes = ((r, run_fold(r)) for r in requests)
        else:
            futures = {executor.submit(run_fold, r): r for r in requests}
            outcomes = ((futures[f], f.result()) for f in cf.as_completed(futures))
        for done, (request, result) in enumerate(outcomes, start=1):
            year = int(request["fold"]["test_year"])
            result["code_version"] = code_version()
            _write_atomically(sweep / f"fold-{year}.json", result)
            results[year] = result
            progress.phase(f"walk-forward: fold {year} done ({done} of {len(pending)})")
    finally:
        if owned is not None:
            owned.shutdown(cancel_futures=True)
    progress.phase("walk-forward: stitching the test years")
    rows = _stitch([results[f.test_year] for f in folds], orchestrators, profiles, config.seed)
    result = WalkForward(
        sweep_dir=sweep, folds=folds, rows=rows, trials=len(rows),
        computed_folds=sorted(int(r["fold"]["test_year"]) for r in requests),
        reused_folds=sorted(set(results) - {int(r["fold"]["test_year"]) for r in requests}),
        fold_seconds={y: float(r.get("seconds", 0.0)) for y, r in sorted(results.items())},
        trained={y: r.get("trained", {}) for y, r in sorted(results.items())},
        targets=walk_forward_targets(
            rows, profiles, tools=sorted({t.split(":")[0] for t in config.orchestrator.tools}),
            shipped=list_profiles()),
    )
    progress.phase("walk-forward: writing the report")
    from quantorch.walkforward_report import write_walkforward_report

    result.report_path = write_walkforward_report(result, Path(config.reports_dir))
    return result


def _stitch(fold_results: list[dict], orchestrators: Sequence[str],
            profiles: Sequence[TraderProfile], seed: int) -> list[WalkForwardRow]:
    """One row per (orchestrator, profile): the test years' returns end to end, the figures,
    the paired Sharpe differences against the baselines and the Deflated Sharpe Ratio."""
    from scipy import stats

    rows: list[WalkForwardRow] = []
    for profile in profiles:
        for name in orchestrators:
            parts, per_fold, decisions, cost, calls, exposure = [], {}, 0, 0.0, 0.0, 0.0
            per_fold_ci, per_fold_cost, tool_calls = {}, {}, Counter()
            for result in fold_results:
                run = next(r for r in result["runs"]
                           if r["orchestrator"] == name and r["profile"] == profile.name)
                series = pd.Series(run["returns"], index=pd.to_datetime(run["dates"]))
                parts.append(series)
                year = int(result["fold"]["test_year"])
                per_fold[year] = float(metrics.sharpe_ratio(series.to_numpy(), 252))
                per_fold_ci[year] = metrics.stationary_block_bootstrap(
                    series.to_numpy(), lambda r: metrics.sharpe_ratio(r, 252, noise_floor=0.0),
                    seed=seed)
                per_fold_cost[year] = (run["tool_cost_usd"] / run["decisions"]
                                       if run["decisions"] else 0.0)
                decisions += run["decisions"]
                cost += run["tool_cost_usd"]
                calls += run["calls_per_decision"] * run["decisions"]
                exposure += run["exposure"] * len(series)
                for tool, rate in run["tool_calls_per_decision"].items():
                    tool_calls[tool] += rate * run["decisions"]
            returns = pd.concat(parts)
            if not returns.index.is_monotonic_increasing or returns.index.has_duplicates:
                raise AssertionError(f"{name}/{profile.name}: test years overlap when stitched")
            values = returns.to_numpy()
            equity = np.cumprod(1.0 + values)
            rows.append(WalkForwardRow(
                orchestrator=name, profile=profile.name, sessions=len(values),
                sharpe=float(metrics.sharpe_ratio(values, 252)),
                sharpe_ci_bootstrap=metrics.stationary_block_bootstrap(
                    values, lambda r: metrics.sharpe_ratio(r, 252, noise_floor=0.0), seed=seed),
                cagr=float(metrics.cagr_from_returns(values, 252)),
                max_drawdown=float(metrics.max_drawdown(np.concatenate([[1.0], equity]))),
                exposure=exposure / len(values) if len(values) else math.nan,
                decisions=decisions, tool_cost_usd=cost,
                tool_cost_per_decision_usd=cost / decisions if decisions else 0.0,
                calls_per_decision=calls / decisions if decisions else 0.0,
                per_fold_sharpe=per_fold, deflated_sharpe=math.nan,
                tool_calls_per_decision={t: n / decisions for t, n in sorted(tool_calls.items())}
                if decisions else {},
                per_fold_sharpe_ci=per_fold_ci, per_fold_tool_cost_per_decision_usd=per_fold_cost,
                returns=returns,
            ))
    # Deflated Sharpe: every (orchestrator, profile) row is one trial of the selection
    per_period = np.array([r.sharpe / math.sqrt(252) for r in rows])
    finite = per_period[np.isfinite(per_period)]
    variance = float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0
    for row in rows:
        values = row.returns.to_numpy()
        if not math.isfinite(row.sharpe) or np.std(values) == 0:
            continue
        row.deflated_sharpe = metrics.deflated_sharpe_ratio(
            row.sharpe / math.sqrt(252), len(values), trials=len(rows),
            sharpe_variance=variance, skewness=float(stats.skew(values)),
            kurtosis=float(stats.kurtosis(values, fisher=False)),
        )
    by = {(r.orchestrator, r.profile): r for r in rows}
    for row in rows:
        if row.orchestrator in _RULES:
            continue
        for baseline in COMPARED_AGAINST:
            other = by.get((baseline, row.profile))
            if other is None or baseline == row.orchestrator:
                continue
            a, b = row.returns.align(other.returns, join="inner")
            diff = metrics.sharpe_difference(a.to_numpy(), b.to_numpy(), seed=seed)
            row.versus[baseline] = {"difference": diff.difference, "low": diff.low,
                                    "high": diff.high, "significant": diff.significant,
                                    "sessions": diff.sessions}
    return rows


# --------------------------------------------------------------------------- targets

#: (a): the policy's tool cost per decision at most this share of all-tools'
_COST_SHARE = 0.20
#: (b): a preferring profile lifts the tool's calls per decision to 3x neutral's rate, or to
#: 90% of decisions when neutral already calls it in more than 30% of them ...
_PREFERENCE_LIFT, _PREFERENCE_FLOOR, _PREFERENCE_BUSY = 3.0, 0.90, 0.30
#: ... at a Sharpe within 10% of neutral's
_SHARPE_TOLERANCE = 0.10
_NEUTRAL = "neutral"


def walk_forward_targets(
    rows: Sequence[WalkForwardRow],
    profiles: Sequence[TraderProfile],
    *,
    tools: Sequence[str] | None = None,
    shipped: Sequence[str] | None = None,
) -> dict:
    """The product's targets (issue 13 item 6) on the stitched walk-forward rows.

    Each key maps to ``{"rule": ..., figures..., "met": bool}``: ``a:<profile>`` (the policy's
    Sharpe at least all-tools' at <= 20% of its tool cost per decision) and ``a`` (that,
    under every profile of ``shipped``); ``b:<tool>`` (a profile that prefers the tool lifts
    the policy's calls of it per decision to >= 3x neutral's rate, or to >= 90% where neutral
    already calls it in more than 30% of decisions, at a Sharpe within 10% of neutral's);
    ``c:<profile>`` (policy beats random: the paired 95% interval of the Sharpe difference is
    above zero), ``d:<profile>`` (the policy's Sharpe above buy-and-hold's) and
    ``e:<profile>`` (policy beats free-tools, paired interval above zero). A check whose rows
    were not evaluated is left out.

    Parameters
    ----------
    rows
        The stitched rows (:func:`walk_forward`); only ``versus``, ``sharpe``,
        ``tool_cost_per_decision_usd`` and ``tool_calls_per_decision`` are read.
    profiles
        The profiles evaluated (their ``tool_preferences`` say which tool each prefers).
    tools
        The tools checked by (b) (default: every tool a row called or a profile prefers).
    shipped
        Profile names (a) must hold under (default: ``profiles``); one not evaluated fails it.
    """
    by = {(r.orchestrator, r.profile): r for r in rows}
    names = [p.name for p in profiles]
    out: dict = {}
    for profile in names:
        policy, all_tools = by.get(("policy", profile)), by.get(("all-tools", profile))
        if policy is None or all_tools is None:
            continue
        ratio = _ratio(policy.tool_cost_per_decision_usd, all_tools.tool_cost_per_decision_usd)
        out[f"a:{profile}"] = {
            "rule": f"policy Sharpe >= all-tools Sharpe at <= {_COST_SHARE:.0%} of its tool "
                    "cost per decision",
            "policy_sharpe": policy.sharpe, "all_tools_sharpe": all_tools.sharpe,
            "policy_cost_per_decision_usd": policy.tool_cost_per_decision_usd,
            "all_tools_cost_per_decision_usd": all_tools.tool_cost_per_decision_usd,
            "cost_ratio": ratio,
            "met": bool(policy.sharpe >= all_tools.sharpe and ratio is not None
                        and _at_most(ratio, _COST_SHARE)),
        }
    checked = [p for p in names if f"a:{p}" in out]
    if checked:
        required = list(dict.fromkeys([*(shipped if shipped is not None else names)]))
        met = [p for p in required if out.get(f"a:{p}", {}).get("met")]
        out["a"] = {
            "rule": "target a under every shipped profile",
            "profiles_met": met,
            "profiles_not_met": [p for p in required if p in checked and p not in met],
            "profiles_missing": [p for p in required if p not in checked],
            "met": bool(required) and len(met) == len(required),
        }
    if any(r.orchestrator == "policy" for r in rows):
        if tools is None:
            tools = sorted({t for r in rows for t in r.tool_calls_per_decision}
                           | {t for p in profiles for t in p.tool_preferences})
        for tool in tools:
            out[f"b:{tool}"] = _preference_target(tool, by, profiles)
    for letter, baseline, paired in (("c", "random", True), ("d", "buy-and-hold", False),
                                     ("e", "free-tools", True)):
        for profile in names:
            policy, other = by.get(("policy", profile)), by.get((baseline, profile))
            if policy is None or other is None:
                continue
            versus = policy.versus.get(baseline, {})
            low = versus.get("low")
            entry = {
                "rule": (f"policy beats {baseline}: paired 95% interval of the Sharpe "
                         "difference above zero" if paired else
                         f"policy Sharpe > {baseline} Sharpe (equal weight, net of costs)"),
                "policy_sharpe": policy.sharpe,
                f"{baseline.replace('-', '_')}_sharpe": other.sharpe,
                "difference": versus.get("difference"), "low": low, "high": versus.get("high"),
            }
            if baseline == "random":
                entry["cost_ratio"] = _ratio(other.tool_cost_per_decision_usd,
                                             policy.tool_cost_per_decision_usd)
            entry["met"] = bool(low is not None and low > 0) if paired else bool(
                policy.sharpe > other.sharpe)
            out[f"{letter}:{profile}"] = entry
    return _clean(out)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


# a figure on a threshold meets it: rounding (3 x 0.1 = 0.30000000000000004) must not decide
def _at_most(value: float, bound: float) -> bool:
    return value <= bound or math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)


def _at_least(value: float, bound: float) -> bool:
    return value >= bound or math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)


def _preference_target(tool: str, by: dict, profiles: Sequence[TraderProfile]) -> dict:
    rule = (f"a profile preferring the tool lifts the share of the policy's decisions calling "
            f"it to >= {_PREFERENCE_LIFT:g}x neutral's (>= {_PREFERENCE_FLOOR:.0%} where "
            f"neutral's is > {_PREFERENCE_BUSY:.0%}), at a Sharpe within "
            f"{_SHARPE_TOLERANCE:.0%} of neutral's")
    preferring = [p.name for p in profiles
                  if p.name != _NEUTRAL and p.tool_preferences.get(tool, 0.0) > 0]
    neutral = by.get(("policy", _NEUTRAL))
    if not preferring:
        return {"rule": rule, "note": "no profile prefers it", "met": False}
    if neutral is None:
        return {"rule": rule, "note": "needs the policy under the neutral profile",
                "met": False}
    base = neutral.tool_calls_per_decision.get(tool, 0.0)
    # 3x neutral's rate, capped at 90% (continuous: 3 x 30% = 90%), and never below neutral's
    required = min(_PREFERENCE_LIFT * base, max(_PREFERENCE_FLOOR, base))
    candidates = {}
    for name in preferring:
        row = by.get(("policy", name))
        if row is None:
            continue
        rate = row.tool_calls_per_decision.get(tool, 0.0)
        gap = (abs(row.sharpe - neutral.sharpe) / abs(neutral.sharpe)
               if math.isfinite(neutral.sharpe) and neutral.sharpe else None)
        candidates[name] = {
            "calls_per_decision": rate, "neutral_calls_per_decision": base,
            "required_calls_per_decision": required,
            "sharpe": row.sharpe, "neutral_sharpe": neutral.sharpe, "sharpe_gap": gap,
            "met": bool(rate > 0 and _at_least(rate, required) and gap is not None
                        and _at_most(gap, _SHARPE_TOLERANCE)),
        }
    if not candidates:
        return {"rule": rule, "note": f"{', '.join(preferring)} not evaluated", "met": False}
    # show the profile that meets it, else the one that calls the tool most
    shown = max(candidates, key=lambda n: (candidates[n]["met"],
                                           candidates[n]["calls_per_decision"]))
    return {"rule": rule, "profile": shown,
            **{k: v for k, v in candidates[shown].items() if k != "met"},
            "by_profile": candidates, "met": candidates[shown]["met"]}


def describe_target(key: str, target: dict) -> str:
    """One line with a :func:`walk_forward_targets` entry's figures (the CLI and the report)."""

    def f(value, spec: str = ".2f") -> str:
        return "n/a" if value is None else format(value, spec)

    t = target
    if "note" in t:
        return t["note"]
    letter = key.partition(":")[0]
    if key == "a":
        parts = [f"met under {', '.join(t['profiles_met']) or 'none'}"]
        if t["profiles_not_met"]:
            parts.append(f"not met under {', '.join(t['profiles_not_met'])}")
        if t["profiles_missing"]:
            parts.append(f"not evaluated: {', '.join(t['profiles_missing'])}")
        return "; ".join(parts)
    if letter == "a":
        return (f"policy Sharpe {f(t['policy_sharpe'])} vs all-tools "
                f"{f(t['all_tools_sharpe'])}; cost per decision "
                f"${f(t['policy_cost_per_decision_usd'], '.4f')} vs "
                f"${f(t['all_tools_cost_per_decision_usd'], '.4f')} = "
                f"{f(t['cost_ratio'], '.0%')} of it (<= {_COST_SHARE:.0%})")
    if letter == "b":
        return (f"{t['profile']} calls it in {f(t['calls_per_decision'], '.0%')} of decisions "
                f"vs neutral {f(t['neutral_calls_per_decision'], '.0%')} (>= "
                f"{f(t['required_calls_per_decision'], '.0%')}); Sharpe {f(t['sharpe'])} vs "
                f"neutral {f(t['neutral_sharpe'])} (gap {f(t['sharpe_gap'], '.0%')}, <= "
                f"{_SHARPE_TOLERANCE:.0%})")
    baseline = {"c": "random", "d": "buy-and-hold", "e": "free-tools"}[letter]
    text = (f"policy Sharpe {f(t['policy_sharpe'])} vs {baseline} "
            f"{f(t[baseline.replace('-', '_') + '_sharpe'])}: difference "
            f"{f(t['difference'], '+.2f')} [{f(t['low'], '+.2f')}, {f(t['high'], '+.2f')}] "
            "paired 95%")
    if letter == "c":
        text += f"; random's cost per decision {f(t['cost_ratio'])}x the policy's"
    return text

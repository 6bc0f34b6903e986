"""Walk-forward speed: one fold (the sample; 500 real stocks) and a whole sweep (issue 13, item 8).

Usage::

    python benchmarks/walkforward_speed.py fold --universe sample|sp500 [--year 2016]
        [--steps N [N ...]] [--profiles neutral] [--orchestrators NAMES] [--threads N]
        [--profile] [--json]
    python benchmarks/walkforward_speed.py sweep [--start 2008] [--end 2022] [--workers 1 2]
        [--steps N] [--profiles all] [--orchestrators NAMES] [--threads N] [--json]

fold
    One walk-forward fold, test year ``--year``, as ``quantorch evaluate --walk-forward --start
    YEAR --end YEAR`` runs it (``walk_forward`` in this process, one worker, so inline; the
    CLI's config overrides; every orchestrator ``evaluate`` compares by default, ``llm`` only
    with an endpoint; ``--train-years all``): the policy and the all-tools head are trained on
    ``training.train_start .. YEAR - 2``, validated on ``YEAR - 1``, and every orchestrator x
    ``--profiles`` (default neutral) and buy-and-hold is backtested on ``YEAR``. Each run gets a
    fresh temporary reports folder, so no fold is reused. Printed: the fold's time
    (``fold_seconds``) split into its phases (the database copy; per training: prices, tool
    panels and datasets, PPO (``trained[...]['seconds']``); the backtests, per orchestrator),
    the walk-forward's own phases around it (loading every price, stitching, the report) and
    the total, with each training's best validation reward (bps), its step and the steps done.
    Several ``--steps`` run one fold each (the step-count scan). The phase split comes from
    timing wrappers this script puts around the functions the fold calls (inline only); each
    phase is also printed on stderr as it ends, so a long fold shows where it is.

    ``--universe sample``: the 20 sample stocks, a fresh database per run (the sample prices
    loaded by the walk-forward itself, inside the total). ``--universe sp500``: the 503-ticker
    S&P 500 file of ``../shared/data`` (2000-2017) is imported first, as ``quantorch data import
    FILE --adjusted --on-bad-rows skip`` does (source ``file``; timed apart, not in the fold),
    and the universe is every ticker with a bar on the test year's first session, 500 at most
    (as benchmarks/paper_speed.py picks them); no benchmark index (the file has none). Exit 2
    with one line when ``../shared/data`` is absent. ``--profile`` runs the fold under cProfile
    and prints the top 25 functions by cumulative time.

sweep
    ``walk_forward`` on the sample for ``--start .. --end`` with each ``--workers`` in turn
    (a fresh database and sweep folder each; more than one worker is the process pool of
    ``--executor local``), wall time end to end, the ratio of the first to each other, and each
    fold's time and trainings.

Conditions: the CPU count and ``os.getloadavg()`` before, during (the mean of the 1-minute
figure sampled every 5 s) and after every figure; torch threads per fold as the walk-forward
sets them (``cpu_count // workers``) unless ``--threads`` says otherwise. Other jobs on a shared
machine only ever add time; on a loaded 2-core machine two torch threads can stall each other
(compare ``--threads 1``: the results are the same, only the time differs).

Targets (2 cores): a sample walk-forward 2008-2022 <= 20 minutes; a 500-stock fold <= 10
minutes. ``fold --universe sample`` prints the projection of a 15-fold sweep from its figure
(15 x fold / 2 workers; meaningful with ``--threads 1``, what each of 2 workers gets, and a
lower bound even then: two folds share the cores, and later test years train on more years).
Steps default to ``training.steps`` (``--steps`` of the CLI). Exit code: 0 when every target
checked is met, 1 when one is missed, 2 when skipped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parents[1]
SP500_FILE = "sp500_ohlcv_2000_2017_adj.csv.gz"
SWEEP_TARGET_S = 20 * 60.0
FOLD_500_TARGET_S = 10 * 60.0
SWEEP_FOLDS, SWEEP_WORKERS = 15, 2  # 2008-2022, 2 cores


# --------------------------------------------------------------------------- conditions


class LoadSampler:
    """The CPU count and the load average before, during (1-minute figure, every 5 s) and
    after a measured run."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.before = self.after = (math.nan, math.nan, math.nan)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> Self:
        self.before = os.getloadavg()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.after = os.getloadavg()

    @property
    def during(self) -> float:
        return sum(self.samples) / len(self.samples) if self.samples else self.after[0]

    def line(self) -> str:
        return (f"cpus {os.cpu_count()}; load average before {_load(self.before)}, during "
                f"{self.during:.2f} (mean 1-min), after {_load(self.after)}")

    def to_json(self) -> dict:
        return {"cpus": os.cpu_count(), "load_before": list(self.before),
                "load_during_mean_1min": self.during, "load_after": list(self.after)}


def _load(triple) -> str:
    return "/".join(f"{x:.2f}" for x in triple)


# --------------------------------------------------------------------------- phase clock


class PhaseClock:
    """Timing wrappers around the functions a fold calls (inline folds only: a pool's
    processes import the modules afresh). ``events`` are ``(kind, label, start, end)``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float, float]] = []
        self._patches: list[tuple[object, str, object]] = []
        self._depth = 0
        self._opened = time.time()

    def _wrap(self, module, name: str, kind: str, label_of=None, outermost: bool = False):
        original = getattr(module, name)

        def timed(*args, **kwargs):
            if outermost and self._depth:
                return original(*args, **kwargs)
            self._depth += outermost
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                self._depth -= outermost
                label = label_of(args, kwargs) if label_of else name
                end = time.time()
                self.events.append((kind, label, start, end))
                # live, on stderr: a long fold shows where it is
                print(f"[{end - self._opened:7.1f} s] {kind} {label}: {end - start:.1f} s",
                      file=sys.stderr, flush=True)

        self._patches.append((module, name, original))
        setattr(module, name, timed)

    def __enter__(self) -> Self:
        from quantorch import evaluation
        from quantorch.backtest import runner
        from quantorch.kernel import factory
        from quantorch.training import pipeline

        def training(args, kwargs):
            return "all-tools" if kwargs.get("all_tools") else "policy"

        def orchestrator(args, kwargs):
            cfg = args[0]
            return (cfg.orchestrator.name if cfg.backtest.strategy == "orchestrator"
                    else cfg.backtest.strategy)

        self._wrap(pipeline, "train_from_config", "training", training)
        self._wrap(pipeline, "ensure_prices", "prices")
        self._wrap(pipeline, "market_for", "panels")
        self._wrap(pipeline, "period_datasets", "panels")
        self._wrap(pipeline, "train_policy", "ppo")
        self._wrap(pipeline, "save_checkpoint", "save")
        # one depth for all backtest wrappers: a participant built inside a simulation counts once
        for module in (runner, evaluation):
            self._wrap(module, "simulate_config", "backtest", orchestrator, outermost=True)
        self._wrap(factory, "build_participant", "backtest", orchestrator, outermost=True)
        return self

    def __exit__(self, *exc) -> None:
        for module, name, original in reversed(self._patches):
            setattr(module, name, original)
        self._patches.clear()

    def fold_phases(self, fold_start: float, fold_end: float) -> dict:
        """The fold's time split into phases (seconds), from the events inside it."""
        inside = [e for e in self.events if fold_start - 1 <= e[2] <= fold_end + 1]
        trainings = sorted((e for e in inside if e[0] == "training"), key=lambda e: e[2])
        phases: dict = {}
        first = trainings[0][2] if trainings else fold_end
        phases["database copy and setup"] = first - fold_start
        for _, label, start, end in trainings:
            parts = {kind: sum(e[3] - e[2] for e in inside
                               if e[0] == kind and start <= e[2] <= end)
                     for kind in ("prices", "panels", "ppo", "save")}
            parts["other"] = (end - start) - sum(parts.values())
            phases[f"training {label}"] = {"total": end - start, **parts}
        last = trainings[-1][3] if trainings else fold_start
        per = defaultdict(float)
        calls = defaultdict(int)
        for kind, label, start, end in inside:
            if kind == "backtest" and start >= last:
                per[label] += end - start
                calls[label] += 1
        phases["backtests"] = {"total": fold_end - last,
                               "by_orchestrator": dict(per), "calls": dict(calls)}
        return phases


class PhaseRecorder:
    """A :class:`quantorch.progress.Progress` that stamps each walk-forward phase."""

    def __init__(self, echo: bool = False) -> None:
        self.phases: list[tuple[str, float]] = []
        self.echo = echo
        self._opened = time.time()

    def phase(self, description: str, total: int | None = None) -> None:
        now = time.time()
        self.phases.append((description, now))
        if self.echo:  # live, on stderr: a long sweep shows where it is
            print(f"[{now - self._opened:7.1f} s] {description}", file=sys.stderr, flush=True)

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        return None

    def span(self, starts_with: str, until: str | None, end: float) -> float:
        stamps = [t for d, t in self.phases if d.startswith(starts_with)]
        if not stamps:
            return math.nan
        later = [t for d, t in self.phases if t >= stamps[0] and until and d.startswith(until)]
        return (later[0] if later else end) - stamps[0]


# --------------------------------------------------------------------------- setup


def _config(folder: Path, start: int, end: int, overrides: dict | None = None):
    """The config ``quantorch evaluate --walk-forward --start START --end END`` builds, with
    a private reports folder and database."""
    from quantorch.config import load_config

    return load_config().with_overrides({
        "backtest.start": dt.date(start, 1, 1), "backtest.end": dt.date(end, 12, 31),
        "backtest.strategy": "orchestrator", "backtest.rebalance": "weekly",
        "reports_dir": folder / "reports", "database.path": folder / "quantorch.duckdb",
        **(overrides or {}),
    })


def _profiles(names: str):
    from quantorch.toolkit.registry import available_tools
    from quantorch.training.pipeline import resolve_profiles

    return resolve_profiles([n.strip() for n in names.split(",") if n.strip()],
                            available_tools())


def _orchestrators(config, names: str | None) -> list[str]:
    from quantorch.evaluation import default_evaluated

    if names:
        return [n.strip() for n in names.split(",") if n.strip()]
    return list(default_evaluated(config))


def _import_sp500(folder: Path, path: Path) -> tuple[Path, float]:
    """``quantorch data import FILE --adjusted --on-bad-rows skip`` into a fresh database."""
    from typer.testing import CliRunner

    from quantorch.cli.main import app

    db = folder / "sp500.duckdb"
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["data", "import", str(path), "--adjusted",
                                      "--on-bad-rows", "skip", "--db", str(db)])
    if result.exit_code != 0:
        raise SystemExit(f"the import failed (exit {result.exit_code}): "
                         f"{(result.stderr or result.stdout).strip()}")
    return db, time.perf_counter() - started


def _sp500_universe(db: Path, year: int, limit: int = 500) -> list[str]:
    """The tickers with a bar on the first session of ``year`` (the file's), ``limit`` at most."""
    from quantorch.data import calendar
    from quantorch.store import Store

    first = calendar.sessions(dt.date(year, 1, 1), dt.date(year, 1, 31))[0].date()
    with Store(db).connect(read_only=True) as con:
        rows = con.execute("SELECT DISTINCT ticker FROM prices WHERE source = 'file' AND "
                           "date = ? ORDER BY ticker", [first]).fetchall()
    return [r[0] for r in rows][:limit]


# --------------------------------------------------------------------------- one fold


def run_one_fold(args, steps: int, folder: Path, db: Path | None, overrides: dict) -> dict:
    """One fold through ``walk_forward`` (inline), timed by phase."""
    import torch

    from quantorch.store import Store
    from quantorch.walkforward import walk_forward

    config = _config(folder, args.year, args.year, overrides)
    store = Store(db if db is not None else config.database.path)
    profiles = _profiles(args.profiles)
    orchestrators = _orchestrators(config, args.orchestrators)
    # what walk_forward gives one worker, unless --threads says otherwise
    threads = args.threads or max(1, (os.cpu_count() or 1) // 1)
    recorder = PhaseRecorder()
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    with LoadSampler() as load, PhaseClock() as clock:
        started = time.time()
        if profiler is not None:
            profiler.enable()
        result = walk_forward(config, store, profiles, orchestrators, start_year=args.year,
                              end_year=args.year, train_years=None, workers=1, steps=steps,
                              threads=args.threads, progress=recorder)
        if profiler is not None:
            profiler.disable()
        ended = time.time()
    assert result.computed_folds == [args.year], result.computed_folds  # nothing reused
    saved = json.loads((result.sweep_dir / f"fold-{args.year}.json").read_text())
    fold_start = dt.datetime.fromisoformat(saved["started_at"]).timestamp()
    fold_s = result.fold_seconds[args.year]
    trained = result.trained[args.year]
    figures = {
        "universe": args.universe, "tickers": len(config.universe), "year": args.year,
        "steps": steps, "orchestrators": orchestrators, "profiles": [p.name for p in profiles],
        "torch_threads": threads, "torch_threads_after": torch.get_num_threads(),
        "total_s": ended - started, "fold_s": fold_s,
        "loading_prices_s": recorder.span("loading prices", "walk-forward:", ended),
        "stitch_and_report_s": recorder.span("walk-forward: stitching", None, ended),
        "phases": clock.fold_phases(fold_start, fold_start + fold_s),
        "trained": trained, "conditions": load.to_json(), "load_line": load.line(),
    }
    if profiler is not None:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        figures["profile"] = text.getvalue()
    return figures


def _print_fold(f: dict) -> None:
    print(f"\nfold {f['year']}, {f['universe']} ({f['tickers']} tickers), {f['steps']:,} PPO "
          f"steps, torch threads {f['torch_threads']}, {len(f['orchestrators'])} "
          f"orchestrators x {', '.join(f['profiles'])}")
    print(f"  conditions: {f['load_line']}")
    print(f"  walk-forward total {f['total_s']:8.1f} s  (loading prices "
          f"{f['loading_prices_s']:.1f} s, fold {f['fold_s']:.1f} s, stitching + report "
          f"{f['stitch_and_report_s']:.1f} s)")
    phases = f["phases"]
    print(f"  fold: database copy and setup {phases['database copy and setup']:.1f} s")
    for name, part in phases.items():
        if not name.startswith("training"):
            continue
        label = name.removeprefix("training ")
        info = f["trained"].get(label, {})
        print(f"  fold: training {label:<9} {part['total']:7.1f} s = prices "
              f"{part['prices']:.1f} + tool panels and datasets {part['panels']:.1f} + PPO "
              f"{part['ppo']:.1f} (trained[...]['seconds'] {info.get('seconds', math.nan):.1f}) "
              f"+ other {part['other'] + part['save']:.1f}")
        print(f"        best validation {info.get('best_validation_bps', math.nan):+.3f} bps at "
              f"step {info.get('best_step', 0):,} of {info.get('steps_done', 0):,}"
              f"{' (stopped early)' if info.get('stopped_early') else ''}; "
              f"{info.get('train_rows', 0):,} training rows, "
              f"{info.get('validation_rows', 0):,} validation rows")
    back = phases["backtests"]
    per = ", ".join(f"{k} {v:.1f} s" + (f" ({back['calls'][k]} calls)"
                                        if back["calls"][k] > 2 else "")
                    for k, v in sorted(back["by_orchestrator"].items(), key=lambda kv: -kv[1]))
    print(f"  fold: backtests {back['total']:.1f} s ({per})")


def fold_command(args) -> int:
    sys.path.insert(0, str(ROOT))
    from tests._shared import shared_data_dir

    overrides: dict = {}
    path = shared_data_dir() / SP500_FILE
    if args.universe == "sp500" and not path.is_file():
        print(f"skipped: {path} is absent (the 500-stock fold needs ../shared/data)")
        return 2
    steps_list = args.steps or [_default_steps()]
    out: dict = {"command": "fold", "universe": args.universe, "runs": []}
    met = True
    with tempfile.TemporaryDirectory(prefix="qt-wf-speed-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # the import's report and anything else stay out of the checkout
        db = None
        if args.universe == "sp500":
            with LoadSampler() as load:
                db, import_s = _import_sp500(folder, path)
            universe = _sp500_universe(db, args.year)
            overrides = {"universe": universe, "data.source": "file", "benchmark": "none"}
            print(f"import of {path.name} (--adjusted --on-bad-rows skip): {import_s:.1f} s; "
                  f"{load.line()}")
            print(f"universe: {len(universe)} tickers with a bar on the first session of "
                  f"{args.year}")
            out["import_s"] = import_s
        for steps in steps_list:
            run_dir = folder / f"run-{steps}"
            run_dir.mkdir()
            figures = run_one_fold(args, steps, run_dir, db, overrides)
            _print_fold(figures)
            if args.universe == "sp500":
                ok = figures["total_s"] <= FOLD_500_TARGET_S
                met &= ok
                print(f"  target: a 500-stock fold <= {FOLD_500_TARGET_S / 60:.0f} min: "
                      f"{figures['total_s'] / 60:.1f} min, {'met' if ok else 'NOT met'}")
            else:
                projected = SWEEP_FOLDS * figures["fold_s"] / SWEEP_WORKERS
                figures["projected_sweep_s"] = projected
                note = ("a lower bound" if figures["torch_threads"] == 1 else
                        f"from a {figures['torch_threads']}-thread fold: each of "
                        f"{SWEEP_WORKERS} workers gets 1, see --threads 1")
                print(f"  projection: {SWEEP_FOLDS} folds / {SWEEP_WORKERS} workers x "
                      f"{figures['fold_s']:.0f} s = {projected / 60:.1f} min ({note}; "
                      f"target <= {SWEEP_TARGET_S / 60:.0f} min: "
                      f"{'within' if projected <= SWEEP_TARGET_S else 'OVER'})")
            if "profile" in figures:
                print("\n" + figures.pop("profile"))
            out["runs"].append(figures)
        os.chdir(ROOT)
    if args.json:
        print(json.dumps(out, default=str))
    return 0 if met else 1


# --------------------------------------------------------------------------- the sweep


def sweep_command(args) -> int:
    from quantorch.store import Store
    from quantorch.walkforward import walk_forward

    steps = args.steps or _default_steps()
    out: dict = {"command": "sweep", "start": args.start, "end": args.end, "steps": steps,
                 "runs": []}
    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="qt-wf-sweep-") as tmp:
        os.chdir(tmp)
        for workers in args.workers:
            folder = Path(tmp) / f"workers-{workers}"
            folder.mkdir()
            config = _config(folder, args.start, args.end)
            profiles = _profiles(args.profiles)
            orchestrators = _orchestrators(config, args.orchestrators)
            threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, workers))
            with LoadSampler() as load:
                started = time.perf_counter()
                result = walk_forward(config, Store(config.database.path), profiles,
                                      orchestrators, start_year=args.start, end_year=args.end,
                                      train_years=None, workers=workers, steps=steps,
                                      threads=args.threads, progress=PhaseRecorder(echo=True))
                wall = time.perf_counter() - started
            walls[workers] = wall
            print(f"\nsweep {args.start}-{args.end}, {len(result.folds)} folds, {steps:,} PPO "
                  f"steps, {workers} worker(s) x {threads} torch thread(s), "
                  f"{len(orchestrators)} orchestrators x {len(profiles)} profile(s): "
                  f"{wall:.1f} s ({wall / 60:.1f} min)")
            print(f"  conditions: {load.line()}")
            for year, seconds in result.fold_seconds.items():
                trained = result.trained[year]
                parts = "; ".join(
                    f"{name} PPO {t['seconds']:.0f} s, best {t['best_validation_bps']:+.2f} "
                    f"bps at {t['best_step']:,}/{t['steps_done']:,}"
                    for name, t in trained.items())
                print(f"  fold {year}: {seconds:6.1f} s ({parts})", flush=True)
            out["runs"].append({"workers": workers, "threads": threads, "wall_s": wall,
                                "fold_seconds": result.fold_seconds,
                                "trained": result.trained, "conditions": load.to_json()})
        os.chdir(ROOT)
    first = args.workers[0]
    met = True
    for workers, wall in walls.items():
        if workers != first:
            print(f"ratio {first} worker(s) / {workers} workers: {walls[first] / wall:.2f}x")
        ok = wall <= SWEEP_TARGET_S
        if workers == SWEEP_WORKERS and (args.start, args.end) == (2008, 2022):
            met &= ok
            print(f"target: sample walk-forward 2008-2022 on 2 cores <= "
                  f"{SWEEP_TARGET_S / 60:.0f} min with {workers} workers: {wall / 60:.1f} min, "
                  f"{'met' if ok else 'NOT met'}")
    if args.json:
        print(json.dumps(out, default=str))
    return 0 if met else 1


def _default_steps() -> int:
    from quantorch.config import load_config

    return load_config().training.steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fold = sub.add_parser("fold", help="time one fold, by phase")
    fold.add_argument("--universe", choices=["sample", "sp500"], default="sample")
    fold.add_argument("--year", type=int, default=2016)
    fold.add_argument("--steps", type=int, nargs="+", metavar="N",
                      help="PPO steps (several: one fold each) [default: training.steps]")
    fold.add_argument("--profiles", default="neutral", metavar="NAMES",
                      help="profiles backtested (comma-separated, or all)")
    fold.add_argument("--orchestrators", metavar="NAMES",
                      help="comma-separated [default: what evaluate compares]")
    fold.add_argument("--profile", action="store_true",
                      help="run under cProfile, print the top 25 by cumulative time")
    fold.add_argument("--threads", type=int, metavar="N",
                      help="torch threads per fold [default: the walk-forward's, cpus // 1]")
    fold.add_argument("--json", action="store_true", help="also print the figures as JSON")
    sweep = sub.add_parser("sweep", help="time a whole sample walk-forward per worker count")
    sweep.add_argument("--start", type=int, default=2008)
    sweep.add_argument("--end", type=int, default=2022)
    sweep.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    sweep.add_argument("--steps", type=int, metavar="N",
                       help="PPO steps per training [default: training.steps]")
    sweep.add_argument("--profiles", default="all", metavar="NAMES",
                       help="profiles backtested (comma-separated, or all: the CLI's default)")
    sweep.add_argument("--orchestrators", metavar="NAMES",
                       help="comma-separated [default: what evaluate compares]")
    sweep.add_argument("--threads", type=int, metavar="N",
                       help="torch threads per fold [default: the walk-forward's, "
                            "cpus // workers]")
    sweep.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, load average at start: {_load(os.getloadavg())}")
    return fold_command(args) if args.command == "fold" else sweep_command(args)


if __name__ == "__main__":
    raise SystemExit(main())

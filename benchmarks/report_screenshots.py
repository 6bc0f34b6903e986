"""Build real reports from the offline sample data and screenshot each page with Chromium.

Usage::

    python benchmarks/report_screenshots.py [--out DIR] [--skip-evaluate] [--skip-wide]

Pages (all written into ``--out``, default a new temporary folder, beside one shared
``plotly-<version>.min.js``):

- ``backtest.html``: the ``policy`` orchestrator under the ``neutral`` profile, 2020-01-02 to
  2022-12-28, on the 20 sample stocks, with the report data ``quantorch backtest`` builds
  (``runner.report_data``: the S&P 500 price index and the equal-weight buy-and-hold of the
  same stocks beside it, default costs). It has tool calls, so every section is there.
- ``evaluate.html`` (unless ``--skip-evaluate``): every orchestrator under the ``neutral`` and
  ``active-technical`` profiles, two seeds for the random router, 2021-01-04 to 2022-12-28:
  the same backtests and row figures as ``quantorch evaluate``, without storing a run.
- ``wide.html`` (unless ``--skip-wide``): 500 synthetic tickers whose paths are real return
  histories of the 20 stocks (see ``benchmarks/backtest_speed.py``), long-short random
  weights rebalanced monthly over 2,000 sessions: the weights chart with 500 tickers, and the
  page size of a long run.

Each page is screenshot headless (``--window-size=1300,<height>``) to ``<page>.png`` in the
same folder; the script prints one line per page with its size and the screenshot's path.
Nothing reaches the network: the data ship in skfolio and arch, Chromium runs with its
network features off and only opens ``file://`` pages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEIGHTS = {"backtest": 9000, "evaluate": 3200, "wide": 9000}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, height: int, timeout_s: float = 120.0) -> Path:
    """Screenshot ``page`` at 1300 x ``height`` pixels into ``png`` with headless Chromium."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="qt-chromium-") as profile:
        command = [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size=1300,{height}",
            "--virtual-time-budget=5000",  # let every chart's script run before the shot
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ]
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=timeout_s
        )
    if done.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return png


def _config(out: Path, start: str, end: str, **overrides):
    from quantorch.config import load_config

    return load_config().with_overrides(
        {
            "backtest.start": dt.date.fromisoformat(start),
            "backtest.end": dt.date.fromisoformat(end),
            "reports_dir": str(out),
            **overrides,
        }
    )


def _store(out: Path):
    from quantorch.config import load_config
    from quantorch.data.service import ensure_prices
    from quantorch.store import Store

    config = load_config()
    store = Store(out / "screenshots.duckdb")
    with store.connect():  # create the file and its tables before the first read
        pass
    ensure_prices(
        store, "sample", [*config.universe, config.benchmark], dt.date(2015, 1, 1),
        dt.date(2022, 12, 31),
    )  # fmt: skip
    return store


def backtest_page(out: Path, store) -> Path:
    """The orchestrator backtest report, built as ``quantorch backtest`` builds it."""
    from quantorch.backtest.report import write_report
    from quantorch.backtest.runner import report_data, run_meta, simulate_config
    from quantorch.store import code_version

    config = _config(out, "2020-01-01", "2022-12-31")
    sim = simulate_config(config, store)
    meta = run_meta(
        run_id="bt-screenshot", first=sim.start, last=sim.end, strategy=sim.strategy_name,
        universe=list(config.universe), benchmark=sim.benchmark, source=config.data.source,
        rebalance=config.backtest.rebalance, fee_bps=config.costs.fee_bps,
        slippage_bps=config.costs.slippage_bps, initial_cash=config.backtest.initial_cash,
        seed=config.seed, config_hash=config.config_hash(), code=code_version(),
    )  # fmt: skip
    data = report_data(sim, meta, f"quantorch backtest bt-screenshot: {sim.strategy_name}")
    return write_report(out / "backtest.html", data)


def evaluate_page(out: Path, store) -> Path:
    """The evaluate report: ``quantorch evaluate``'s backtests and rows, nothing stored."""
    from quantorch.backtest.runner import simulate_config
    from quantorch.config import ORCHESTRATOR
    from quantorch.evaluation import Evaluation, _row, check_targets, write_evaluation_report
    from quantorch.kernel.factory import build_participant, load_policies
    from quantorch.orchestrator.orchestrators import ORCHESTRATORS
    from quantorch.orchestrator.profiles import load_profile

    config = _config(out, "2021-01-01", "2022-12-31")
    profiles = [load_profile("neutral"), load_profile("active-technical")]
    seeds = 2
    policies = load_policies(config, need_all_tools=True)
    cache: dict = {}
    rows = []
    for profile in profiles:
        for name in ORCHESTRATORS:
            n = seeds if name == "random" else 1
            runs = []
            for k in range(n):
                cfg = config.with_overrides({
                    "backtest.strategy": ORCHESTRATOR, "orchestrator.name": name,
                })  # fmt: skip
                participant = build_participant(cfg, store, seed=config.seed + k,
                                                policies=policies, cache=cache, profile=profile)
                runs.append(simulate_config(cfg, store, participant=participant))
            row = _row(name, profile, runs, config.seed)
            if n == 1:
                row.seeds = seeds
                row.per_seed_sharpe = row.per_seed_sharpe * seeds
            rows.append(row)
            print(f"  evaluated {name} under {profile.name}", flush=True)
    evaluation = Evaluation(
        run_id="ev-screenshot", start=runs[0].start, end=runs[0].end, rows=rows,
        targets=check_targets(rows, profiles),
    )  # fmt: skip
    path = write_evaluation_report(evaluation, out)
    return path.rename(out / "evaluate.html")


def wide_page(out: Path) -> Path:
    """500 tickers, long-short, 2,000 sessions (see the module docstring)."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from backtest_speed import build_inputs

    from quantorch.backtest.engine import Costs, simulate
    from quantorch.backtest.metrics import performance_metrics
    from quantorch.backtest.report import Comparison, ReportData, write_report

    panel, _, sources = build_inputs(500, 2000, seed=0)
    rng = np.random.default_rng(1)
    month_ends = panel.close.groupby(panel.close.index.to_period("M")).tail(1).index
    raw = rng.standard_normal((len(month_ends), panel.close.shape[1])) + 0.3
    raw[rng.random(raw.shape) < 0.7] = 0.0  # about 150 names held at a time
    weights = pd.DataFrame(raw / np.abs(raw).sum(axis=1, keepdims=True) * 1.3,
                           index=month_ends, columns=panel.close.columns)  # fmt: skip
    result = simulate(panel, weights, Costs(1.0, 5.0), 1e6)
    equal_weights = pd.DataFrame(1.0 / panel.close.shape[1], index=panel.dates[:1],
                                 columns=panel.close.columns)  # fmt: skip
    equal = simulate(panel, equal_weights, Costs(1.0, 5.0), 1e6)
    data = ReportData(
        title="quantorch backtest bt-wide: 500 synthetic tickers, long-short",
        meta={"run id": "bt-wide", "universe": f"500 synthetic tickers from {sources}",
              "period": f"{panel.dates[0]:%Y-%m-%d} to {panel.dates[-1]:%Y-%m-%d}"},
        equity=result.equity,
        cash=result.cash,
        weights=result.weights,
        metrics=performance_metrics(result.equity, result.fills, result.gross_exposure),
        comparisons=[Comparison(
            "equal_weight", "Equal-weight buy-and-hold (500 tickers, costs charged)",
            equal.equity, performance_metrics(equal.equity, equal.fills, equal.gross_exposure),
        )],
        fills=result.fills,
    )  # fmt: skip
    return write_report(out / "wide.html", data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for pages and PNGs")
    parser.add_argument("--skip-evaluate", action="store_true", help="no evaluate page")
    parser.add_argument("--skip-wide", action="store_true", help="no 500-ticker page")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="quantorch-screenshots-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QUANTORCH_LOCK_TIMEOUT", "5")

    started = time.perf_counter()
    store = _store(out)
    pages = {"backtest": backtest_page(out, store)}
    if not args.skip_evaluate:
        pages["evaluate"] = evaluate_page(out, store)
    if not args.skip_wide:
        pages["wide"] = wide_page(out)
    print(f"built {len(pages)} pages in {time.perf_counter() - started:.0f} s into {out}")
    for name, page in pages.items():
        size = page.stat().st_size
        if chromium() is None:
            print(f"{name}: {page} ({size / 1e6:.2f} MB); no chromium, no screenshot")
            continue
        png = screenshot(page, page.with_suffix(".png"), HEIGHTS[name])
        print(f"{name}: {page} ({size / 1e6:.2f} MB) -> {png}")


if __name__ == "__main__":
    main()

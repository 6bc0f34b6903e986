"""Backtest speed and memory: the engine at scale, and the ``quantorch backtest`` command.

Usage::

    python benchmarks/backtest_speed.py [--skip-cli] [--tickers 500] [--sessions 5000] [--seed 0]

Engine part
-----------
A synthetic but real-return panel of ``--tickers`` x ``--sessions`` (500 x 5,000 by default)
is built from the 20 real S&P 500 stocks shipped in skfolio (adjusted closes 1990-2022):
each synthetic ticker takes the daily log-return path of one randomly chosen real stock over
``--sessions`` consecutive real sessions starting at a random offset (seeded), compounded from
a price of 100. So every path is a real return history; tickers drawn from the same stock at
different offsets are different periods of it. The dates are the last ``--sessions`` real
sessions of the data set. Target weights are random, long-only, summing to 1, and change
every session (a decision at every close, so every ticker trades every day: the worst case).

``simulate()`` is the whole engine: the kernel's session walk (orders sized at each close
with ``target_shares``, executed at the next session with ``execute``), vectorbt's
``from_orders`` record of those share orders, and the check that both agree. It runs twice
in one child process whose numba cache directory is empty (``NUMBA_CACHE_DIR`` set to a fresh
folder): the first call includes numba compiling vectorbt's kernel; the second is warm. A second child reuses that now filled cache, giving
the first-call time a fresh process sees in normal use (kernel loaded from the disk cache).
Peak memory is the child process's peak resident set size (``resource.getrusage`` ``ru_maxrss``:
interpreter, imports, the panel, and the simulations together); the increase over the
resident size just before the first call is shown beside it.

CLI part (skipped with ``--skip-cli``)
--------------------------------------
``quantorch backtest --start 2020 --db <tmp>`` runs in a subprocess twice in an empty
working folder: cold (a fresh database: prices are fetched and stored) and warm (the same
database). Any failure is reported as "not available" with its last line of output.

Targets: ``simulate()`` warm <= 5 s and peak memory <= 2 GiB for 500 x 5,000 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIME_TARGET_S = 5.0
MEMORY_TARGET_BYTES = 2 * 1024**3


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def build_inputs(n_tickers: int, n_sessions: int, seed: int):
    """The synthetic panel and random daily target weights (see the module docstring)."""
    import numpy as np
    import pandas as pd
    from skfolio.datasets import load_sp500_dataset

    from quantorch.data.panel import PricePanel

    real = load_sp500_dataset().astype("float64")
    log_returns = np.log(real.to_numpy()[1:] / real.to_numpy()[:-1])
    if n_sessions > len(log_returns):
        raise SystemExit(f"--sessions can be at most {len(log_returns)} (real history)")
    rng = np.random.default_rng(seed)
    stock = rng.integers(0, real.shape[1], n_tickers)
    offset = rng.integers(0, len(log_returns) - n_sessions + 1, n_tickers)
    rows = offset[None, :] + np.arange(n_sessions)[:, None]
    paths = log_returns[rows, stock[None, :]]
    paths[0] = 0.0  # every synthetic ticker starts at 100
    close = 100.0 * np.exp(np.cumsum(paths, axis=0))
    dates = pd.DatetimeIndex(real.index[-n_sessions:]).as_unit("ns").rename("date")
    tickers = [f"SYN{j:04d}" for j in range(n_tickers)]
    panel = PricePanel.from_close(pd.DataFrame(close, index=dates, columns=tickers))
    raw = rng.random((n_sessions, n_tickers))
    weights = pd.DataFrame(raw / raw.sum(axis=1, keepdims=True), index=dates, columns=tickers)
    sources = ", ".join(sorted({str(real.columns[s]) for s in stock}))
    return panel, weights, f"{len(set(stock.tolist()))} real stocks ({sources})"


def child(args: argparse.Namespace) -> None:
    """Build the inputs, time simulate() twice, print one JSON line."""
    started = time.perf_counter()
    import vectorbt  # noqa: F401  (imported up front: its ~2 s import is not simulation time)

    from quantorch.backtest.engine import Costs, simulate

    import_s = time.perf_counter() - started
    started = time.perf_counter()
    panel, weights, sources = build_inputs(args.tickers, args.sessions, args.seed)
    build_s = time.perf_counter() - started
    costs = Costs(fee_bps=1.0, slippage_bps=5.0)
    rss_before = _rss_bytes()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        result = simulate(panel, weights, costs, 1_000_000.0)
        times.append(time.perf_counter() - started)
        n_fills = len(result.fills)
        final = float(result.equity.iloc[-1])
        del result
    print(
        json.dumps(
            {
                "import_s": import_s,
                "build_s": build_s,
                "first_s": times[0],
                "warm_s": times[1],
                "peak_rss": _peak_rss_bytes(),
                "rss_before": rss_before,
                "fills": n_fills,
                "final_equity": final,
                "sources": sources,
            }
        )
    )


def _run_child(args: argparse.Namespace, cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    command = [
        sys.executable,
        __file__,
        "--child",
        "--tickers",
        str(args.tickers),
        "--sessions",
        str(args.sessions),
        "--seed",
        str(args.seed),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"engine benchmark child failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _cli_command() -> list[str]:
    script = Path(sys.executable).with_name("quantorch")
    if script.exists():
        return [str(script)]
    found = shutil.which("quantorch")
    if found:
        return [found]
    return [sys.executable, "-c", "from quantorch.cli.main import run; run()"]


def _time_cli(db: Path, workdir: Path) -> tuple[float | None, str]:
    command = [*_cli_command(), "backtest", "--start", "2020", "--db", str(db)]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"not available ({type(exc).__name__}: {exc})"
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return (
            None,
            f"not available (exit {done.returncode}: {lines[-1] if lines else 'no output'})",
        )
    return elapsed, "ok"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cli", action="store_true", help="skip the CLI timings")
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print(
        f"Engine: simulate() on {args.tickers} tickers x {args.sessions} sessions, "
        f"random long-only target weights rebalanced every session, fee 1 bp, slippage 5 bp."
    )
    print(
        f"Panel: each synthetic ticker = the real daily return path of a random skfolio "
        f"S&P 500 stock from a random start offset (seed {args.seed}); CPUs: {os.cpu_count()}."
    )
    with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache_dir:
        cold = _run_child(args, cache_dir)  # empty numba cache: the first call compiles
        cached = _run_child(args, cache_dir)  # same cache, now filled: a normal fresh process
    print(
        f"Paths drawn from {cold['sources']}; {cold['fills']:,} fills per run; "
        f"final equity {cold['final_equity']:,.0f}; build {cold['build_s']:.1f} s, "
        f"imports {cold['import_s']:.1f} s."
    )
    print("Peak memory: ru_maxrss of the benchmark child process (whole process).\n")

    rows = [
        (
            "simulate() first call, empty numba cache (compile)",
            f"{cold['first_s']:.2f} s",
            "-",
            "info",
        ),
        (
            "simulate() first call, numba disk cache filled",
            f"{cached['first_s']:.2f} s",
            "-",
            "info",
        ),
    ]
    warm = max(cold["warm_s"], cached["warm_s"])  # the slower of the two warm calls
    rows.append(
        (
            "simulate() warm call",
            f"{warm:.2f} s",
            f"<= {TIME_TARGET_S:g} s",
            "PASS" if warm <= TIME_TARGET_S else "FAIL",
        )
    )
    worst = max((cold, cached), key=lambda run: run["peak_rss"])
    peak = worst["peak_rss"]
    added = peak - worst["rss_before"]
    rows.append(
        (
            f"peak RSS (process; +{_gib(added)} over the pre-simulate RSS)",
            _gib(peak),
            f"<= {_gib(MEMORY_TARGET_BYTES)}",
            "PASS" if peak <= MEMORY_TARGET_BYTES else "FAIL",
        )
    )

    if not args.skip_cli:
        with tempfile.TemporaryDirectory(prefix="quantorch-bench-") as tmp:
            db = Path(tmp) / "bench.duckdb"
            for label in ("cold: fresh database", "warm: same database"):
                elapsed, status = _time_cli(db, Path(tmp))
                value = f"{elapsed:.2f} s" if elapsed is not None else status
                rows.append((f"quantorch backtest --start 2020 ({label})", value, "-", "info"))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>14}  {'target':>10}  result")
    print("-" * (width + 36))
    for name, value, target, verdict in rows:
        print(f"{name:<{width}}  {value:>14}  {target:>10}  {verdict}")


if __name__ == "__main__":
    main()

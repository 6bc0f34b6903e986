"""Tool speed: whole panels (backtests, training) and single calls (the runner).

Usage::

    python benchmarks/tools_speed.py [--tickers 500] [--sessions 5000] [--seed 0]
                                     [--calls 60] [--skip-garch] [--skip-cli]

Panels on the real sample
-------------------------
The 20 S&P 500 stocks shipped in skfolio (adjusted closes, 1990-2022, about 8,300 sessions),
the S&P 500 index as benchmark, the style-factor ETFs (2014-2022) and, when present, the real
StockNet tweets (``../shared/data/stocknet_tweets.csv.gz``, 2014-2016) as news. Every provider
that computes offline is timed: technical basic/full, risk fast/full (GARCH refits every
quarter: about 130 fits per stock), fundamental factor and sentiment lexicon when their modules
import (their rows say "not available" otherwise).

Panels at scale
---------------
A ``--tickers`` x ``--sessions`` panel (500 x 5,000) from real returns: each synthetic ticker
takes the daily log-return path of one randomly chosen real stock over ``--sessions``
consecutive real sessions starting at a random offset (seeded), compounded from 100 (the method
of ``backtest_speed.py``); the dates are the last ``--sessions`` real sessions. The benchmark
and the factor ETFs need as many sessions but only exist from 2014, so their daily returns are
a joint block bootstrap (blocks of 21 sessions, rows drawn together so their correlations and
volatility clustering survive) of the real 2014-2022 returns. The stocks' link to the factors is
not kept: timing does not depend on it. The sentiment panel gets each synthetic ticker the real
tweets of the stock its path came from, shifted by the same offset in sessions. risk:full
(GARCH, about 20 fits per ticker: minutes) is not part of the target and is left out here.

Target: technical (full) + risk (fast) + fundamental (factor) panels on 500 x 5,000 <= 10 s
on 2 cores. Each of these panels is timed ``--repeat`` times and the best run counts (a shared
machine's other work only ever adds time); the load average at the start is recorded.

Single calls
------------
``--calls`` calls per tool and provider through ``ToolRunner.run`` (checks, the cut at asof, a
worker thread with the timeout; the cache off so every call computes) on the real sample with
its full history, random ticker and asof (2015-2022; 2014-2016 for sentiment, when the tweets
are there), after one warm-up call. p50 and p95 in milliseconds. ``--skip-cli`` skips timing
``quantorch tools run`` in a fresh process (cold start: imports, data load, the call).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_S = 10.0
ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT.parent / "shared" / "data" / "stocknet_tweets.csv.gz"


def _tool(name: str):
    """The tool module's TOOL, or None when the module does not import (not available)."""
    try:
        return importlib.import_module(f"quantorch.tools.{name}").TOOL
    except Exception as exc:  # noqa: BLE001 - a module may be missing or mid-change
        print(f"  ({name}: not available: {type(exc).__name__}: {exc})")
        return None


def _tweets(tickers: list[str]) -> pd.DataFrame | None:
    if not TWEETS.exists():
        return None
    frame = pd.read_csv(TWEETS, usecols=["published_at", "ticker", "text", "source"])
    frame = frame[frame["ticker"].isin(tickers)]
    published = pd.to_datetime(frame["published_at"], utc=True).dt.tz_localize(None)
    return pd.DataFrame({
        "published_at": published, "ticker": frame["ticker"], "headline": frame["text"],
        "body": None, "source": frame["source"],
    }).sort_values(["ticker", "published_at"], ignore_index=True)


def sample_market():
    from skfolio.datasets import load_factors_dataset, load_sp500_dataset, load_sp500_index

    from quantorch.data.panel import PricePanel
    from quantorch.toolkit.spec import MarketData

    close = load_sp500_dataset().astype("float64")
    close.index = pd.DatetimeIndex(close.index).as_unit("ns").rename("date")
    close.columns = [str(c) for c in close.columns]
    index = load_sp500_index().astype("float64").iloc[:, 0]
    factors = load_factors_dataset().astype("float64")
    factors.index = pd.DatetimeIndex(factors.index).as_unit("ns")
    return MarketData(
        prices=PricePanel.from_close(close),
        benchmark=pd.Series(index.to_numpy(), index=pd.DatetimeIndex(index.index).as_unit("ns")).reindex(close.index),
        factors=factors.reindex(close.index),
        news=_tweets(list(close.columns)),
    )


def scaled_market(sample, n_tickers: int, n_sessions: int, seed: int):
    from quantorch.data.panel import PricePanel
    from quantorch.toolkit.spec import MarketData

    rng = np.random.default_rng(seed)
    real = sample.prices.close
    log_returns = np.log(real).diff().iloc[1:]
    if n_sessions > len(log_returns):
        raise SystemExit(f"--sessions can be at most {len(log_returns)} (real history)")
    source = rng.integers(0, real.shape[1], n_tickers)
    offset = rng.integers(0, len(log_returns) - n_sessions + 1, n_tickers)
    rows = offset[None, :] + np.arange(n_sessions)[:, None]
    paths = np.nan_to_num(log_returns.to_numpy()[rows, source[None, :]])
    dates = pd.DatetimeIndex(real.index[-n_sessions:]).as_unit("ns").rename("date")
    tickers = [f"S{j:04d}" for j in range(n_tickers)]
    close = pd.DataFrame(100 * np.exp(np.cumsum(paths, axis=0)), index=dates, columns=tickers)

    # benchmark and factors: a joint block bootstrap of their real 2014-2022 daily returns
    joint = pd.concat([sample.benchmark.rename("SP500"), sample.factors], axis=1).loc["2014-02":]
    joint_returns = joint.pct_change(fill_method=None).iloc[1:].dropna().to_numpy()
    starts = rng.integers(0, len(joint_returns) - 21, n_sessions // 21 + 1)
    drawn = np.concatenate([joint_returns[s : s + 21] for s in starts])[:n_sessions]
    levels = 100 * np.cumprod(1 + drawn, axis=0)
    benchmark = pd.Series(levels[:, 0], index=dates)
    factors = pd.DataFrame(levels[:, 1:], index=dates, columns=sample.factors.columns)

    news = None
    if sample.news is not None:
        real_dates = real.index
        parts = []
        for j in range(n_tickers):
            items = sample.news[sample.news["ticker"] == real.columns[source[j]]]
            if items.empty:
                continue
            # the item moves with its day: real session p is row p - 1 - offset of the path
            day = items["published_at"].dt.normalize()
            position = real_dates.searchsorted(day) - 1 - offset[j]
            keep = (position >= 0) & (position < n_sessions)
            if keep.any():
                moved = items[keep].copy()
                moved["published_at"] = dates[position[keep]] + (
                    items["published_at"][keep] - day[keep]
                ).to_numpy()
                moved["ticker"] = tickers[j]
                parts.append(moved)
        news = pd.concat(parts, ignore_index=True) if parts else None
    return MarketData(prices=PricePanel.from_close(close), benchmark=benchmark, factors=factors,
                      news=news)


def time_panel(tool, provider: str, data, repeat: int = 1) -> float | None:
    if tool is None:
        return None
    spec = tool.spec.provider(provider)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        tool.panel(data, spec, data.prices.tickers, data.prices.dates)
        best = min(best, time.perf_counter() - started)
    return best


def time_calls(tool, provider: str, data, n_calls: int, seed: int, years: tuple[str, str]) -> dict | None:
    if tool is None:
        return None
    from quantorch.toolkit.runner import ToolRunner
    from quantorch.toolkit.spec import ToolRequest

    runner = ToolRunner(None, cache=False, tools={tool.spec.name: tool}, timeout_s=30)
    rng = np.random.default_rng(seed)
    dates = data.prices.dates[(data.prices.dates >= years[0]) & (data.prices.dates <= years[1])]
    tickers = data.prices.tickers
    if data.news is not None and tool.spec.name == "sentiment":
        tickers = sorted(set(data.news["ticker"]) & set(tickers))

    def call():
        request = ToolRequest(tool=tool.spec.name, provider=provider,
                              ticker=tickers[rng.integers(len(tickers))],
                              asof=dates[rng.integers(len(dates))])
        started = time.perf_counter()
        result = runner.run(request, data)
        elapsed = (time.perf_counter() - started) * 1000
        if result.error:
            raise RuntimeError(result.error)
        return elapsed

    call()  # warm-up: imports, numba kernels loaded from the disk cache
    times = np.array([call() for _ in range(n_calls)])
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "calls": n_calls}


def time_cli() -> dict:
    """``quantorch tools run`` in a fresh process: cold (empty database) then warm."""
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.duckdb"
        command = [sys.executable, "-m", "quantorch.cli.main", "tools", "run", "risk", "--ticker",
                   "AAPL", "--asof", "2021-03-01", "--provider", "full", "--db", str(db), "--json"]
        for label in ("cold_db", "warm_db_cache_hit"):
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder, check=False,
                                  env={**os.environ, "QUANTORCH_DB": str(db)})
            elapsed = time.perf_counter() - started
            ok = done.returncode == 0
            out[label] = {"seconds": round(elapsed, 2) if ok else None,
                          "note": "" if ok else (done.stderr.strip().splitlines() or ["?"])[-1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3,
                        help="panels at scale: best of this many runs (the machine may be shared)")
    parser.add_argument("--skip-garch", action="store_true", help="skip risk:full on the sample")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()

    tools = {name: _tool(name)
             for name in ("technical", "risk", "fundamental", "sentiment", "cross_section")}
    providers = [("technical", "basic"), ("technical", "full"), ("risk", "fast"), ("risk", "full"),
                 ("fundamental", "factor"), ("sentiment", "lexicon"), ("cross_section", "basic")]
    report: dict = {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()}

    sample = sample_market()
    print(f"Panels on the real sample: {len(sample.prices.tickers)} stocks x "
          f"{len(sample.prices.dates)} sessions "
          f"({'with' if sample.news is not None else 'without'} tweets as news)")
    report["sample_panel_s"] = {}
    for name, provider in providers:
        if (name, provider) == ("risk", "full") and args.skip_garch:
            continue
        seconds = time_panel(tools[name], provider, sample)
        report["sample_panel_s"][f"{name}:{provider}"] = seconds
        print(f"  {name}:{provider:8s} {'not available' if seconds is None else f'{seconds:8.2f} s'}")

    print(f"Panels at scale: {args.tickers} x {args.sessions} from real returns (see the docs)")
    scaled = scaled_market(sample, args.tickers, args.sessions, args.seed)
    report["scaled_panel_s"] = {}
    for name, provider in providers:
        if (name, provider) == ("risk", "full"):
            continue
        seconds = time_panel(tools[name], provider, scaled, repeat=args.repeat)
        report["scaled_panel_s"][f"{name}:{provider}"] = seconds
        print(f"  {name}:{provider:8s} {'not available' if seconds is None else f'{seconds:8.2f} s'}")
    parts = [report["scaled_panel_s"].get(k) for k in ("technical:full", "risk:fast", "fundamental:factor")]
    total = sum(p for p in parts if p is not None)
    complete = all(p is not None for p in parts)
    report["target"] = {"technical_full+risk_fast+fundamental_factor_s": total,
                        "complete": complete, "target_s": TARGET_S,
                        "met": complete and total <= TARGET_S}
    print(f"  target: technical(full)+risk(fast)+fundamental(factor) = {total:.2f} s "
          f"(<= {TARGET_S:.0f} s: {'met' if complete and total <= TARGET_S else 'NOT met'}"
          f"{'' if complete else ', incomplete'})")

    print(f"Single calls through the runner ({args.calls} each, warm; p50 / p95 ms)")
    report["single_call_ms"] = {}
    for name, provider in providers:
        years = ("2014-03-01", "2016-03-31") if name == "sentiment" else ("2015-01-01", "2022-12-28")
        try:
            stats = time_calls(tools[name], provider, sample, args.calls, args.seed, years)
        except Exception as exc:  # noqa: BLE001 - report and go on
            print(f"  {name}:{provider:8s} failed: {exc}")
            continue
        report["single_call_ms"][f"{name}:{provider}"] = stats
        if stats is None:
            print(f"  {name}:{provider:8s} not available")
        else:
            print(f"  {name}:{provider:8s} {stats['p50_ms']:8.1f} / {stats['p95_ms']:8.1f}")

    if not args.skip_cli:
        report["cli_s"] = time_cli()
        for label, value in report["cli_s"].items():
            shown = f"{value['seconds']} s" if value["seconds"] is not None else f"failed: {value['note']}"
            print(f"  quantorch tools run risk --provider full, {label}: {shown}")

    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "tools_speed.json").write_text(json.dumps(report, indent=2))
    print(f"written: {out / 'tools_speed.json'}")


if __name__ == "__main__":
    main()

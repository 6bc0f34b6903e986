"""Does tweet sentiment rank next-day or next-week returns? Information coefficients on real data.

Usage::

    python benchmarks/sentiment_ic.py [--providers lexicon,embed] [--start 2014-01-02]
                                      [--end 2016-03-31] [--bootstrap 2000] [--json OUT]

The real StockNet tweets (``../shared/data/stocknet_tweets.csv.gz``, 16 of the sample stocks,
2014 to March 2016) are imported into a temporary DuckDB with ``import_news`` (``text`` is the
headline), next to the sample prices. For every session t and ticker, each provider's
``sentiment_score`` is the tool's panel value: the items published in the 3 days before the
close of t (16:00 New York). Forward returns follow BRIEF section 3: a decision at the close
of t fills at the next session's close (the sample has no opens), so the h-day return runs
from the close of t+1 to the close of t+1+h (h = 1 and 5). A same-day row (close t-1 to close
t, the period the tweets were written in, not tradable) is shown for context.

Only (t, ticker) with at least one item count. Reported:

- pooled IC: Spearman rank correlation over all those (t, ticker);
- daily IC: the mean over sessions of the cross-sectional Spearman correlation (sessions with
  at least 5 tickers covered), which removes the market's common moves; with a Newey-West
  t-statistic (lag h, because 5-day returns overlap);
- 95% confidence intervals from a moving-block bootstrap over sessions (blocks of 20 sessions,
  so serial correlation and overlapping horizons are kept inside a block).

The ``llm`` provider is added when ``QUANTORCH_LLM_BASE_URL`` and ``QUANTORCH_LLM_MODEL`` are
set (one call per session and ticker with news, cached in the temporary store's
``tool_cache``). The embedding provider scores ~36,000 distinct tweets: minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT.parent / "shared" / "data" / "stocknet_tweets.csv.gz"
BLOCK = 20
MIN_CROSS_SECTION = 5


def _ranks(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).rank(method="average").to_numpy()


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def newey_west_t(values: np.ndarray, lags: int) -> float:
    """t-statistic of the mean with a Bartlett-kernel (Newey-West) long-run variance."""
    x = values[np.isfinite(values)]
    n = len(x)
    if n < 10:
        return float("nan")
    e = x - x.mean()
    variance = e @ e / n
    for lag in range(1, lags + 1):
        variance += 2 * (1 - lag / (lags + 1)) * (e[lag:] @ e[:-lag]) / n
    return float(x.mean() / np.sqrt(variance / n))


def block_indices(n: int, rng: np.random.Generator, block: int = BLOCK) -> np.ndarray:
    """A moving-block bootstrap resample of range(n)."""
    starts = rng.integers(0, max(1, n - block + 1), size=int(np.ceil(n / block)))
    return np.concatenate([np.arange(s, min(s + block, n)) for s in starts])[:n]


def information_coefficients(
    score: pd.DataFrame,
    covered: pd.DataFrame,
    forward: pd.DataFrame,
    n_boot: int,
    lags: int,
    seed: int = 0,
) -> dict:
    """Pooled and mean daily Spearman ICs with block-bootstrap 95% intervals (module docs)."""
    ok = covered & score.notna() & forward.notna() & np.isfinite(forward)
    dates = score.index[ok.any(axis=1).to_numpy()]
    per_date_x = [score.loc[d][ok.loc[d]].to_numpy() for d in dates]
    per_date_y = [forward.loc[d][ok.loc[d]].to_numpy() for d in dates]
    x_all, y_all = np.concatenate(per_date_x), np.concatenate(per_date_y)
    pooled = spearman(x_all, y_all)
    daily = np.array(
        [
            spearman(x, y) if len(x) >= MIN_CROSS_SECTION else np.nan
            for x, y in zip(per_date_x, per_date_y, strict=True)
        ]
    )
    rng = np.random.default_rng(seed)
    pooled_boot, daily_boot = [], []
    lengths = np.array([len(x) for x in per_date_x])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for _ in range(n_boot):
        pick = block_indices(len(dates), rng)
        rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in pick])
        pooled_boot.append(spearman(x_all[rows], y_all[rows]))
        daily_boot.append(np.nanmean(daily[pick]))
    return {
        "pooled_ic": pooled,
        "pooled_ci": [
            float(np.nanpercentile(pooled_boot, 2.5)),
            float(np.nanpercentile(pooled_boot, 97.5)),
        ],
        "observations": len(x_all),
        "daily_ic": float(np.nanmean(daily)),
        "daily_ci": [
            float(np.nanpercentile(daily_boot, 2.5)),
            float(np.nanpercentile(daily_boot, 97.5)),
        ],
        "daily_t_newey_west": newey_west_t(daily, lags),
        "sessions": int(np.isfinite(daily).sum()),
    }


def load(store_dir: Path, start: dt.date, end: dt.date):
    from quantorch.data.news import import_news, load_news, read_news_file
    from quantorch.data.service import ensure_prices, load_panel
    from quantorch.store import Store
    from quantorch.toolkit.spec import MarketData

    store = Store(store_dir / "ic.duckdb")
    rows, notes = read_news_file(TWEETS, mapping={"headline": "text"})
    report = import_news(store, rows, notes)
    tickers = sorted(rows["ticker"].unique())
    first, last = start - dt.timedelta(days=40), end + dt.timedelta(days=40)
    ensure_prices(store, "sample", tickers, first, last)
    prices = load_panel(store, "sample", tickers, first, last)
    news = load_news(store, tickers)
    return store, MarketData(prices=prices, news=news), tickers, report.inserted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--providers",
        default=None,
        help="comma-separated (default: lexicon,embed, plus llm if configured)",
    )
    parser.add_argument("--start", default="2014-01-02")
    parser.add_argument("--end", default="2016-03-31")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not TWEETS.exists():
        print(f"{TWEETS} not found: this benchmark needs ../shared/data beside the repository")
        return 1
    providers = args.providers.split(",") if args.providers else ["lexicon", "embed"]
    if (
        args.providers is None
        and os.environ.get("QUANTORCH_LLM_BASE_URL")
        and os.environ.get("QUANTORCH_LLM_MODEL")
    ):
        providers.append("llm")

    from quantorch.tools.sentiment import TOOL, StorePromptCache

    from quantorch.orchestrator.dataset import forward_returns

    start, end = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        store, data, tickers, imported = load(Path(tmp), start, end)
        data = dataclasses.replace(data, extras={"prompt_cache": StorePromptCache(store)})
        print(
            f"imported {imported:,} tweets for {len(tickers)} tickers, prices loaded "
            f"({time.perf_counter() - began:.1f} s)",
            flush=True,
        )
        dates = data.prices.dates[
            (data.prices.dates >= pd.Timestamp(start)) & (data.prices.dates <= pd.Timestamp(end))
        ]
        close = data.prices.close
        targets = {
            "same day (t-1 to t, not tradable)": close.pct_change(fill_method=None),
            "next day (t+1 to t+2)": forward_returns(data.prices, 1),
            "5 days (t+1 to t+6)": forward_returns(data.prices, 5),
        }
        lags = {
            "same day (t-1 to t, not tradable)": 1,
            "next day (t+1 to t+2)": 1,
            "5 days (t+1 to t+6)": 5,
        }
        results = []
        for provider in providers:
            began = time.perf_counter()
            frames = TOOL.panel(data, TOOL.spec.provider(provider), tickers, dates)
            elapsed = time.perf_counter() - began
            score = frames["sentiment_score"]
            covered = np.expm1(frames["news_count"]) > 0
            print(
                f"{provider}: panel {len(dates)} sessions x {len(tickers)} tickers in {elapsed:.1f} s; "
                f"{covered.to_numpy().mean():.0%} of (session, ticker) have tweets",
                flush=True,
            )
            for horizon, forward in targets.items():
                figures = information_coefficients(
                    score,
                    covered,
                    forward.reindex(index=dates, columns=tickers),
                    args.bootstrap,
                    lags[horizon],
                )
                results.append({"provider": provider, "horizon": horizon, **figures})
    print()
    print(
        f"Sentiment IC on StockNet tweets, {start} to {end} (sample prices; 95% CIs: block bootstrap "
        f"over sessions, blocks of {BLOCK})"
    )
    header = (
        f"{'provider':<9} {'horizon':<34} {'pooled IC':>9} {'95% CI':>17} {'N':>6}   "
        f"{'daily IC':>8} {'95% CI':>17} {'t(NW)':>6} {'days':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['provider']:<9} {r['horizon']:<34} {r['pooled_ic']:>+9.4f} "
            f"[{r['pooled_ci'][0]:+.4f}, {r['pooled_ci'][1]:+.4f}] {r['observations']:>6}   "
            f"{r['daily_ic']:>+8.4f} [{r['daily_ci'][0]:+.4f}, {r['daily_ci'][1]:+.4f}] "
            f"{r['daily_t_newey_west']:>+6.2f} {r['sessions']:>5}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())

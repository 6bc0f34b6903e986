"""How much do the tools know about the next week's return? Rank ICs of every feature, on the
training years only (issue 13, item 6: the ceiling on what routing to a tool can earn).

Usage::

    python benchmarks/tool_ic.py [--universe sample|sp500] [--start 2005-01-01]
        [--end 2018-12-31] [--horizons 5 21] [--tools SLOT,...] [--fundamentals FILE]
        [--bootstrap 1000] [--json OUT]

For each weekly decision date t (the backtests' schedule: the last session of each week) and
each ticker with a price, every feature is read as the orchestrator would receive it: the free
context (``CONTEXT_FEATURES``, seen without a call), each tool slot of the config's
``orchestrator.tools`` and of ``--tools`` (e.g. ``cross_section:basic``; whole panels, equal
to single calls; a slot's feature counts only where the tool had data by its own rule, so
sentiment without news is left out), and one reference the product's context does not hold,
the classic 12-1 momentum (return from t-252 to t-21). The label is
the reward's forward return: from the fill at the next session (open where known) to the close
``h`` sessions later.

Per feature and horizon: the **daily IC**, the mean over dates of the cross-sectional Spearman
correlation between the feature and the forward return (dates with at least 5 tickers), which
removes the market's common moves; its Newey-West t-statistic (lag ceil(h / 5): weekly dates,
overlapping horizons); a 95% interval from a moving-block bootstrap over dates (blocks of 8
weeks); and the share of (date, ticker) points where the feature had data. A cross-sectional
Spearman IC is unchanged by any increasing transform of the feature within a date, so it is
also the IC of the feature's *rank within the universe*: a cross-sectional-rank feature can
add no rank signal a raw feature lacks.

``--fundamentals FILE`` imports point-in-time filings first (as ``quantorch data
import-fundamentals FILE`` does; e.g. ``../shared/data/sec_fundamentals.csv.gz`` with
``--tools fundamental:file``).

``--universe sample``: the 20 sample stocks (a fresh temporary database), default 2005-2018,
the shipped checkpoint's training and validation years. ``--universe sp500``: the 503-ticker
S&P 500 file of ``../shared/data`` imported as ``quantorch data import FILE --adjusted
--on-bad-rows skip`` does, the universe every ticker with a bar on the first session of
``--start``'s year; default 2001-2016 (the years the 2008-2017 walk-forward trains on; the
file ends in November 2017). Exit 2 with one line when the file is absent.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from sentiment_ic import newey_west_t  # noqa: E402  (the benchmarks' one Newey-West t)

SP500_FILE = "sp500_ohlcv_2000_2017_adj.csv.gz"
BLOCK_WEEKS = 8
MIN_CROSS_SECTION = 5


def daily_ic(feature: pd.DataFrame, forward: pd.DataFrame, has_data: pd.DataFrame) -> np.ndarray:
    """Per date, the Spearman correlation across tickers where both are known (NaN: < 5)."""
    ok = has_data & feature.notna() & forward.notna()
    x = feature.where(ok).rank(axis=1)
    y = forward.where(ok).rank(axis=1)
    count = ok.sum(axis=1).to_numpy()
    x = x.sub(x.mean(axis=1), axis=0).to_numpy()
    y = y.sub(y.mean(axis=1), axis=0).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        num = np.nansum(x * y, axis=1)
        den = np.sqrt(np.nansum(x * x, axis=1) * np.nansum(y * y, axis=1))
        ic = num / den
    ic[(count < MIN_CROSS_SECTION) | ~np.isfinite(ic)] = np.nan
    return ic


def block_interval(values: np.ndarray, n_boot: int, seed: int = 0) -> list[float]:
    """95% moving-block bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    x = values[np.isfinite(values)]
    if len(x) < 2 * BLOCK_WEEKS or n_boot == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(x) - BLOCK_WEEKS + 1, size=(n_boot, math.ceil(len(x) / BLOCK_WEEKS)))
    rows = (starts[:, :, None] + np.arange(BLOCK_WEEKS)).reshape(n_boot, -1)[:, : len(x)]
    means = x[rows].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _market(universe: str, start: dt.date, end: dt.date, folder: Path,
            fundamentals: Path | None = None):
    """The config and the market data of the universe (prices with warm-up) in ``folder``."""
    from quantorch.config import load_config
    from quantorch.data import calendar
    from quantorch.data.service import ensure_prices
    from quantorch.orchestrator.slots import WARMUP_SESSIONS
    from quantorch.store import Store
    from quantorch.training.data import market_for

    config = load_config().with_overrides({"database.path": folder / "ic.duckdb"})
    if universe == "sp500":
        sys.path.insert(0, str(ROOT))
        from tests._shared import shared_data_dir

        path = shared_data_dir() / SP500_FILE
        if not path.is_file():
            print(f"{path} is absent: the sp500 universe needs ../shared/data (or "
                  "QUANTORCH_SHARED_DATA)", file=sys.stderr)
            raise SystemExit(2)
        from walkforward_speed import _import_sp500, _sp500_universe

        db, seconds = _import_sp500(folder, path)
        print(f"imported the S&P 500 file in {seconds:.0f} s", file=sys.stderr)
        tickers = _sp500_universe(db, start.year)
        config = config.with_overrides({"database.path": db, "universe": tickers,
                                        "data.source": "file", "benchmark": "none"})
    store = Store(config.database.path)
    if fundamentals is not None:
        from quantorch.data.fundamentals import import_fundamentals, read_fundamentals_file

        report = import_fundamentals(store, read_fundamentals_file(fundamentals))
        print(f"imported the filings of {fundamentals.name}: {report}", file=sys.stderr)
    if config.data.source == "sample":
        first = calendar.shift_sessions(start, -WARMUP_SESSIONS).date()
        from quantorch.data.providers.sample import FACTOR_ETFS

        wanted = list(config.universe) + [config.benchmark_symbol] + list(FACTOR_ETFS)
        ensure_prices(store, "sample", wanted, first, end)
    return config, market_for(config, store, start, end)


def study(universe: str, start: dt.date, end: dt.date, horizons: list[int], n_boot: int,
          extra_slots: list[str] = (), fundamentals: Path | None = None) -> dict:
    from quantorch.data.calendar import period_ends
    from quantorch.orchestrator.dataset import (
        CONTEXT_FEATURES,
        context_panels,
        coverage_of,
        forward_returns,
    )
    from quantorch.orchestrator.slots import resolve_slots, slot_panels

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantorch-ic-") as tmp:
        config, market = _market(universe, start, end, Path(tmp), fundamentals)
        cut = market.truncate(pd.Timestamp(end))
        prices = cut.prices
        sessions = prices.dates[(prices.dates >= pd.Timestamp(start)) & (prices.dates <= pd.Timestamp(end))]
        dates = period_ends(sessions, "weekly")
        tickers = list(prices.tickers)
        keys = list(dict.fromkeys([*config.orchestrator.tools, *extra_slots]))
        slots = resolve_slots(keys, config.tools.extra_dirs)
        panels, _ = slot_panels(cut, slots, tickers, dates, extra_dirs=config.tools.extra_dirs)

    def at_dates(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.reindex(index=dates, columns=tickers)

    everywhere = at_dates(prices.close).notna()
    features: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    context = context_panels(prices)
    for name in CONTEXT_FEATURES:
        features[f"context:{name}"] = (at_dates(context[name]), everywhere)
    close = prices.close
    features["reference:momentum_12_1"] = (at_dates(close.shift(21) / close.shift(252) - 1), everywhere)
    for slot, frames in panels:
        stacked = np.stack([at_dates(frames[f]).to_numpy(dtype=np.float64) for f in slot.features], axis=-1)
        has = coverage_of(slot, stacked.reshape(-1, len(slot.features)), config.tools.extra_dirs)
        has = pd.DataFrame(has.reshape(len(dates), len(tickers)), index=dates, columns=tickers) & everywhere
        for name in slot.features:
            key = f"{slot.tool}:{name}"
            if key not in features or has.to_numpy().sum() > features[key][1].to_numpy().sum():
                features[key] = (at_dates(frames[name]), has)  # the widest provider's coverage
    # labels from prices cut at the period's end, as the training datasets take them
    labels = {h: at_dates(forward_returns(prices, h)) for h in horizons}
    rows = []
    points = int(everywhere.to_numpy().sum())
    for key, (frame, has) in features.items():
        known = (has & frame.notna()).to_numpy().sum()
        row = {"feature": key, "coverage": float(known / max(points, 1))}
        for h in horizons:
            ic = daily_ic(frame, labels[h], has)
            row[f"ic_{h}"] = float(np.nanmean(ic)) if np.isfinite(ic).any() else float("nan")
            row[f"t_{h}"] = newey_west_t(ic, lags=math.ceil(h / 5))
            row[f"ci_{h}"] = block_interval(ic, n_boot)
            row[f"dates_{h}"] = int(np.isfinite(ic).sum())
        rows.append(row)
    return {"universe": universe, "tickers": len(tickers), "start": str(start), "end": str(end),
            "weekly_dates": len(dates), "horizons": horizons, "bootstrap": n_boot,
            "seconds": time.perf_counter() - started, "features": rows}


def _print(out: dict) -> None:
    horizons = out["horizons"]
    print(f"rank IC on {out['universe']} ({out['tickers']} tickers), {out['start']} to "
          f"{out['end']}, {out['weekly_dates']} weekly dates ({out['seconds']:.0f} s); daily IC "
          f"[95% block bootstrap] (Newey-West t)")
    head = f"{'feature':<34}{'coverage':>9}" + "".join(f"{f'h={h}':>28}" for h in horizons)
    print(head)
    for r in out["features"]:
        cells = ""
        for h in horizons:
            lo, hi = r[f"ci_{h}"]
            cells += f"{r[f'ic_{h}']:>+8.3f} [{lo:+.3f},{hi:+.3f}] ({r[f't_{h}']:+.1f})"
        print(f"{r['feature']:<34}{r['coverage']:>8.0%} {cells}")
    for h in horizons:
        strong = [r["feature"] for r in out["features"]
                  if abs(r[f"t_{h}"]) >= 2 and abs(r[f"ic_{h}"]) >= 0.02]
        tools = [f for f in strong if not f.startswith(("context:", "reference:"))]
        print(f"h={h}: {len(strong)} of {len(out['features'])} features with |IC| >= 0.02 and "
              f"|t| >= 2 ({len(tools)} of them from tools): {', '.join(strong) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--universe", choices=["sample", "sp500"], default="sample")
    parser.add_argument("--start", type=dt.date.fromisoformat)
    parser.add_argument("--end", type=dt.date.fromisoformat)
    parser.add_argument("--horizons", type=int, nargs="+", default=[5, 21])
    parser.add_argument("--tools", default="", help="extra tool:provider slots, comma-separated")
    parser.add_argument("--fundamentals", type=Path, help="filings to import first (CSV/Parquet)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    defaults = {"sample": (dt.date(2005, 1, 1), dt.date(2018, 12, 31)),
                "sp500": (dt.date(2001, 1, 1), dt.date(2016, 12, 31))}[args.universe]
    start, end = args.start or defaults[0], args.end or defaults[1]
    extra = [t.strip() for t in args.tools.split(",") if t.strip()]
    from quantorch.errors import QuantorchError

    try:
        out = study(args.universe, start, end, args.horizons, args.bootstrap, extra,
                    args.fundamentals)
    except QuantorchError as exc:  # a bad --tools, --fundamentals or period: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _print(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

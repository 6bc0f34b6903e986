"""Paper-trading speed: one warm cycle (20 sample stocks; 500 real tickers), and a year's replay
against the backtest of the same year.

Usage::

    python benchmarks/paper_speed.py [--skip-500] [--skip-cli] [--year 2021]

Warm cycle, 20 stocks (target <= 5 s)
    A temporary database with the sample prices stored (no download in the figure). An account
    replays the first weeks of ``--year`` in this process (imports, the policy and the price
    history loaded: what a long-running ``paper start`` process has warm). Then, as the
    scheduler does each day, a *new* ``PaperTrader`` runs one cycle: a decision session (the
    week's last: settle, decide with real logged tool calls, RiskGuard, orders, positions,
    equity) and a session without a decision (settle, mark, record). Each is timed.

Warm cycle, 500 tickers (target <= 60 s; skipped without ../shared/data)
    The 503-ticker S&P 500 daily OHLCV file of ../shared/data, 2015-01-02 to 2017-11-10, read as
    ``quantorch data import --adjusted --on-bad-rows skip`` reads it (its bad rows dropped), imported
    as the ``file`` source into a temporary database; the universe is the tickers with prices
    on the first session of 2016. An account opens on 2016-01-04 and the warm cycle is the
    decision of 2016-01-08, timed as above.

Replay against backtest (target <= 5x)
    ``quantorch paper replay --start YEAR --end YEAR`` and ``quantorch backtest --start YEAR
    --end YEAR`` in subprocesses, each on its own copy of the same loaded database (the sample,
    prices stored), timed wall clock end to end; the ratio is the figure. Both use the same
    kernel; the replay makes every tool call for real (logged), one cycle per session, each
    step committed before the next.
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

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QUANTORCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
TARGET_20_S, TARGET_500_S, TARGET_RATIO = 5.0, 60.0, 5.0


def _loaded_sample(folder: Path) -> Path:
    from quantorch.config import load_config
    from quantorch.data.service import ensure_prices
    from quantorch.store import Store

    db = folder / "sample.duckdb"
    config = load_config()
    ensure_prices(Store(db), "sample", [*config.universe, config.benchmark],
                  dt.date(1990, 1, 1), dt.date(2022, 12, 31))
    return db


def _timed_cycles(config, db: Path, warm: tuple[dt.date, dt.date], decide: dt.date,
                  quiet: dt.date | None) -> dict[str, float]:
    from quantorch.paper.cycle import PaperTrader
    from quantorch.store import Store

    store = Store(db)
    started = time.perf_counter()
    PaperTrader(config, store).replay(*warm)
    figures = {"warm-up replay s": time.perf_counter() - started}
    started = time.perf_counter()
    outcome = PaperTrader(config, store).run(decide)[-1]
    figures["decision cycle s"] = time.perf_counter() - started
    assert outcome.decided and outcome.status == "done", outcome
    figures["orders"] = outcome.orders
    if quiet is not None:
        started = time.perf_counter()
        outcome = PaperTrader(config, store).run(quiet)[-1]
        figures["cycle without a decision s"] = time.perf_counter() - started
        assert not outcome.decided and outcome.status == "done", outcome
    return figures


def warm_cycle_20(folder: Path, year: int) -> dict[str, float]:
    from quantorch.config import load_config
    from quantorch.data import calendar

    db = _loaded_sample(folder)
    config = load_config().with_overrides({"paper.account": "bench20"})
    sessions = calendar.sessions(dt.date(year, 1, 1), dt.date(year, 3, 31))
    fridays = calendar.period_ends(sessions, "weekly")
    decide = fridays[4].date()
    warm_end = calendar.shift_sessions(decide, -1).date()
    quiet = calendar.shift_sessions(decide, 1).date()
    return _timed_cycles(config, db, (sessions[0].date(), warm_end), decide, quiet)


def warm_cycle_500(folder: Path) -> dict[str, float] | None:
    path = SHARED / "sp500_ohlcv_2000_2017_adj.csv.gz"
    if not path.is_file():
        print(f"500 tickers: skipped ({path} is absent)")
        return None
    import pandas as pd

    from quantorch.config import load_config
    from quantorch.data.service import import_prices, read_price_file
    from quantorch.store import Store

    # as `quantorch data import FILE --adjusted --on-bad-rows skip` reads it
    bars = read_price_file(path, adjusted=True, on_bad_rows="skip")
    clean = bars[bars["date"] >= pd.Timestamp("2015-01-02")]
    db = folder / "sp500.duckdb"
    import_prices(Store(db), clean, "file")
    first = clean[clean["date"] == pd.Timestamp("2016-01-04")]
    universe = sorted(first["ticker"].unique())[:500]
    config = load_config().with_overrides({
        "paper.account": "bench500", "universe": universe, "data.source": "file",
        "benchmark": "none",
    })
    figures = _timed_cycles(config, db, (dt.date(2016, 1, 4), dt.date(2016, 1, 7)),
                            dt.date(2016, 1, 8), dt.date(2016, 1, 11))
    figures["tickers"] = len(universe)
    return figures


def cli_ratio(folder: Path, year: int) -> dict[str, float]:
    template = _loaded_sample(folder)
    figures = {}
    for name, args in (
        ("backtest", ["backtest", "--start", str(year), "--end", str(year), "--json"]),
        ("paper replay", ["paper", "replay", "--start", str(year), "--end", str(year),
                          "--json"]),
    ):
        db = folder / f"{name.replace(' ', '_')}.duckdb"
        shutil.copy(template, db)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "quantorch", *args, "--db", str(db)],
                              capture_output=True, text=True, cwd=folder)
        figures[f"{name} s"] = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr.strip()}")
    figures["ratio"] = figures["paper replay s"] / figures["backtest s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--year", type=int, default=2021)
    parser.add_argument("--skip-500", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="quantorch-paper-speed-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)  # reports land in the temporary folder
        (folder / "a").mkdir()
        twenty = warm_cycle_20(folder / "a", args.year)
        print(f"warm cycle, 20 sample stocks: decision {twenty['decision cycle s']:.2f} s "
              f"({twenty['orders']} orders; target <= {TARGET_20_S:g} s), without a decision "
              f"{twenty['cycle without a decision s']:.2f} s")
        if not args.skip_500:
            (folder / "b").mkdir()
            big = warm_cycle_500(folder / "b")
            if big is not None:
                print(f"warm cycle, {big['tickers']} tickers (../shared/data): decision "
                      f"{big['decision cycle s']:.1f} s ({big['orders']} orders; target <= "
                      f"{TARGET_500_S:g} s), without a decision "
                      f"{big['cycle without a decision s']:.1f} s; opening replay of 4 "
                      f"sessions {big['warm-up replay s']:.1f} s")
        if not args.skip_cli:
            (folder / "c").mkdir()
            cli = cli_ratio(folder / "c", args.year)
            print(f"paper replay of {args.year} {cli['paper replay s']:.1f} s vs backtest of "
                  f"{args.year} {cli['backtest s']:.1f} s: {cli['ratio']:.2f}x "
                  f"(target <= {TARGET_RATIO:g}x)")


if __name__ == "__main__":
    main()

"""Import speed: `quantorch data import` of the real 1.8M-row S&P 500 file (issue 13, item 1).

Usage::

    python benchmarks/import_speed.py [--file PATH] [--on-bad-rows skip|keep] [--repeat 1]

Imports ``../shared/data/sp500_ohlcv_2000_2017_adj.csv.gz`` (503 tickers, 1,845,739 daily
bars, 2000-2017; see the README there) with ``--adjusted`` into a fresh database, in process
through the CLI (as a user runs it, without the interpreter's start-up), and prints the time of
each phase (read and validate, find the defects, write) and of the whole command, with the
defect counts the import reported. Target: <= 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 30.0
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from tests._shared import shared_data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path,
                        default=shared_data_dir() / "sp500_ohlcv_2000_2017_adj.csv.gz")
    parser.add_argument("--on-bad-rows", default="skip", choices=["skip", "keep"])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not args.file.exists():
        print(f"{args.file} not found: the benchmark needs ../shared/data", file=sys.stderr)
        return 2

    from typer.testing import CliRunner

    from quantorch.cli.main import app
    from quantorch.data.service import (
        find_price_defects,
        import_prices,
        inspect_price_file,
        rows_to_import,
    )
    from quantorch.store import Store

    print(f"cores: {os.cpu_count()}, file: {args.file} ({args.file.stat().st_size / 1e6:.1f} MB)")
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory() as folder:
            os.chdir(folder)
            # the phases, through the service functions the command calls
            t0 = time.perf_counter()
            checked = inspect_price_file(args.file, adjusted=True)
            t1 = time.perf_counter()
            find_price_defects(checked.frame)  # again, alone, to time it
            t2 = time.perf_counter()
            frame = rows_to_import(checked, args.on_bad_rows)
            flagged = checked.defects.rows if args.on_bad_rows == "keep" else None
            import_prices(Store(Path(folder) / "phases.duckdb"), frame, "file", flagged=flagged)
            t3 = time.perf_counter()
            # the whole command
            db = Path(folder) / "q.duckdb"
            started = time.perf_counter()
            result = CliRunner().invoke(app, ["data", "import", str(args.file), "--adjusted",
                                              "--on-bad-rows", args.on_bad_rows, "--db", str(db)])
            elapsed = time.perf_counter() - started
            if result.exit_code != 0:
                print(result.stdout, result.stderr, file=sys.stderr)
                return 1
            report = json.loads(next(Path(folder, "backtests").glob("import-*.json")).read_text())
            os.chdir(ROOT)
        print(f"run {run + 1}: read + validate {t1 - t0:.1f} s (of which defects "
              f"{t2 - t1:.1f} s), write {t3 - t2:.1f} s")
        print(f"run {run + 1}: `quantorch data import --on-bad-rows {args.on_bad_rows}`: "
              f"{elapsed:.1f} s for {report['rows_read']:,} rows "
              f"({'meets' if elapsed <= TARGET_S else 'MISSES'} the {TARGET_S:.0f} s target)")
        print(f"defects: {json.dumps(report['counts'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Query speed: a group-by over tool, profile and month on 10 million tool calls.

Usage::

    python benchmarks/query_speed.py [--calls 10000000] [--runs 200] [--repeat 7] [--db PATH]

A fresh database of the current schema is filled inside DuckDB (``range()`` and ``random()``,
seeded with ``setseed``) with ``--runs`` evaluate runs (four in five name a profile in their
config, every tenth decides for two profiles), 0.4 decisions per call, and ``--calls`` tool
calls spread over four tools, three providers, 20 tickers and the sessions of 2015-2022, with
random prices, latencies, cache hits (20%), errors (1%) and no-coverage calls (5%).

Then the research question "calls, cost, cache hits and errors by tool, profile and month" runs
through the ``v_tool_usage`` view (which finds each call's profile, see docs/research.md):

    SELECT tool, profile, month, sum(calls), sum(cost_usd), sum(cache_hits), sum(errors)
    FROM v_tool_usage GROUP BY tool, profile, month

timed on an open read-only connection (median of ``--repeat`` runs after one warm-up), and
end to end through ``quantorch.query.run_query`` (open the file read-only, run, fetch, close),
as ``quantorch query`` does; for reference, the whole view (latency medians included) too.
Target: the group-by's median <= 1 s on 2 cores. ``--db`` keeps the database
(built once, reused on the next run with the same path).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 1.0

QUESTION = """
SELECT tool, profile, month,
       sum(calls) AS calls, sum(cost_usd) AS cost_usd,
       sum(cache_hits) AS cache_hits, sum(errors) AS errors
FROM v_tool_usage
GROUP BY tool, profile, month
"""

_PROFILES = "['neutral', 'active-technical', 'cautious-fundamental', 'cost-conscious-quant']"


def build(path: Path, n_calls: int, n_runs: int) -> None:
    """Fill ``path`` (see the module docstring); every row is generated inside DuckDB."""
    import duckdb

    from quantorch.store import Store

    Store(path).migrate()
    n_decisions = max(int(n_calls * 0.4), n_runs)
    per_run = n_decisions // n_runs
    con = duckdb.connect(str(path))
    try:
        con.execute("SELECT setseed(0.42)")
        con.execute(f"""
            INSERT INTO runs
            SELECT 'ev-' || r, 'evaluate', TIMESTAMP '2024-01-01' + INTERVAL (r) MINUTE, 'policy',
                   'sample', ['T0', 'T1'], 'SP500', DATE '2015-01-02', DATE '2022-12-30', 'daily',
                   r, md5(r::VARCHAR)[:16],
                   CASE WHEN r % 5 = 4 THEN '{{"seed": 1}}'
                        ELSE json_object('profile', {_PROFILES}[r % 4 + 1]) END,
                   'benchmark', '{{}}', NULL, NULL
            FROM range({n_runs}) AS t(r)
        """)
        con.execute("""
            CREATE TEMP TABLE sessions AS
            SELECT row_number() OVER (ORDER BY d) - 1 AS k, CAST(d AS DATE) AS day
            FROM range(DATE '2015-01-02', DATE '2022-12-31', INTERVAL 1 DAY) AS t(d)
            WHERE dayofweek(d) BETWEEN 1 AND 5
        """)
        n_sessions = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
        # decision i: run i // per_run, ticker i % 20, session (i % per_run) // 20
        con.execute(f"""
            INSERT INTO decisions
            SELECT 'ev-' || (i // {per_run}), i % {per_run}, 'policy',
                   CASE WHEN (i // {per_run}) % 10 = 0 AND i % 2 = 1 THEN 'active-technical'
                        ELSE {_PROFILES}[(i // {per_run}) % 4 + 1] END,
                   'T' || (i % 20), s.day, s.day + 1, 5, ['technical:talib'], 1, 0.001,
                   0.5, 0.05, NULL, NULL, NULL
            FROM range({per_run * n_runs}) AS t(i)
            JOIN sessions AS s ON s.k = ((i % {per_run}) // 20) % {n_sessions}
        """)
        # call j serves decision j % n_decisions
        con.execute(f"""
            INSERT INTO tool_calls
            SELECT 'c' || j, 'ev-' || (i // {per_run}),
                   ['technical', 'fundamental', 'sentiment', 'risk'][(j // 7) % 4 + 1],
                   ['free', 'standard', 'premium'][j % 3 + 1],
                   'T' || (i % 20), s.day + INTERVAL 21 HOUR, '{{}}', '{{"score": 0.1}}', NULL,
                   random() > 0.05, round(random() * 0.01, 5), 2 + random() * 900,
                   random() < 0.2, CASE WHEN random() < 0.01 THEN 'timeout' END, NULL, NULL,
                   TIMESTAMP '2024-01-01'
            FROM (SELECT j, j % {per_run * n_runs} AS i FROM range({n_calls}) AS t(j))
            JOIN sessions AS s ON s.k = ((i % {per_run}) // 20) % {n_sessions}
        """)
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _median_time(run, repeat: int) -> tuple[float, list[float]]:
    run()  # warm-up: file pages into memory
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", type=Path, default=None, help="keep (and reuse) this database")
    args = parser.parse_args(argv)

    import duckdb

    from quantorch.query import run_query
    from quantorch.store import Store

    folder = None
    if args.db is None:
        folder = tempfile.TemporaryDirectory(prefix="quantorch-bench-")
        path = Path(folder.name) / "bench.duckdb"
    else:
        path = args.db
    try:
        if not path.exists():
            started = time.perf_counter()
            build(path, args.calls, args.runs)
            print(f"built {path.name}: {time.perf_counter() - started:.1f} s, "
                  f"{path.stat().st_size / 2**20:,.0f} MiB")
        store = Store(path)
        with store.connect(read_only=True) as con:
            calls, decisions = con.execute(
                "SELECT (SELECT count(*) FROM tool_calls), (SELECT count(*) FROM decisions)"
            ).fetchone()
            threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
            groups = len(con.execute(QUESTION).fetchall())
            view_median, view_times = _median_time(lambda: con.execute(QUESTION).fetchall(),
                                                   args.repeat)
            full_median, _ = _median_time(
                lambda: con.execute("SELECT * FROM v_tool_usage").fetchall(), args.repeat
            )
        end_to_end, _ = _median_time(lambda: run_query(store, QUESTION), args.repeat)
    finally:
        if folder is not None:
            folder.cleanup()

    print(f"duckdb {duckdb.__version__}, {threads} threads, {os.cpu_count()} cores; "
          f"{calls:,} tool calls, {decisions:,} decisions, {groups:,} result rows")
    print("group-by over tool, profile and month via v_tool_usage: "
          f"median {view_median:.3f} s of {args.repeat} "
          f"(min {min(view_times):.3f}, max {max(view_times):.3f})")
    print(f"end to end (quantorch.query.run_query: open read-only, run, fetch): "
          f"median {end_to_end:.3f} s")
    print(f"for reference, the whole view (per run and provider, with latency medians): "
          f"median {full_median:.3f} s")
    ok = view_median <= TARGET_S
    print(f"target <= {TARGET_S:.1f} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

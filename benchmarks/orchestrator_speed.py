"""Orchestrator speed: batched environment throughput, training wall time, policy backtest.

Run ``python benchmarks/orchestrator_speed.py [--skip-train] [--skip-backtest]``.

1. Environment throughput: ``BatchedDecisionEnv`` with 1,024 episodes stepped together on the
   real decision dataset the shipped checkpoint trains on (sample universe, 2015-2018, every
   tool slot of the default config), driven by uniformly random *valid* actions drawn
   vectorised from the action masks (the policy's forward pass is not included: that is the
   learner's cost, measured in 2). Target >= 20,000 env steps/s on 2 cores.
2. Training: ``quantorch train`` exactly as the shipped checkpoint is made (default config and
   seed), in a subprocess on a fresh database, wall time. Target <= 10 minutes on 2 cores.
3. ``quantorch backtest --start 2020`` end to end with the trained policy, in a subprocess on a
   database that already holds the prices (warm caches: second run). Target <= 30 s.
4. With ``--baseline REF`` (a git commit, e.g. the one before the decision kernel): the same
   backtest run by that commit's code, installed in a temporary folder, alternating with this
   code, median of ``--repeats`` runs each, as a ratio. Target: this code <= 1.10x the baseline.
5. ``--tool-calls live`` (real calls through the tool runner, on a database whose tool cache is
   empty, then warm) against the panel path, as a ratio. Target <= 3x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def env_throughput(seconds: float = 5.0, n_envs: int = 1024) -> float:
    from quantorch.config import load_config
    from quantorch.data.providers.sample import FACTOR_ETFS
    from quantorch.data.service import ensure_prices
    from quantorch.orchestrator.env import BatchedDecisionEnv
    from quantorch.orchestrator.profiles import list_profiles, load_profile
    from quantorch.orchestrator.slots import resolve_slots
    from quantorch.store import Store
    from quantorch.training.data import market_for, period_dataset

    config = load_config()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.duckdb")
        periods = config.training
        ensure_prices(store, "sample", [*config.universe, "SP500", *FACTOR_ETFS],
                      periods.train_start.replace(year=periods.train_start.year - 2), periods.train_end)
        market = market_for(config, store, periods.train_start, periods.train_end)
        slots = resolve_slots(config.orchestrator.tools)
        dataset = period_dataset(market, slots, periods.train_start, periods.train_end,
                                 config.orchestrator.horizon).tradable()
    profiles = [load_profile(n) for n in list_profiles()]
    env = BatchedDecisionEnv(dataset, profiles, n_envs=n_envs, seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    steps = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        masks = env.action_masks()
        scores = rng.random(masks.shape) * masks
        env.step(scores.argmax(axis=1))
        steps += n_envs
    rate = steps / (time.perf_counter() - started)
    print(f"dataset: {len(dataset):,} decision points, {len(slots)} tool slots, "
          f"observation size {env.observation_space.shape[0]}")
    return rate


def _run(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=env["BENCH_CWD"])
    return time.perf_counter() - started, proc


_BASELINE_SHIM = """
import sys
# run an installed baseline, not this checkout (an editable install maps quantorch here)
sys.meta_path = [f for f in sys.meta_path if "editable" not in (type(f).__module__ or "")]
sys.path.insert(0, sys.argv.pop(1))
from quantorch.cli.main import app
app(sys.argv[1:], standalone_mode=False)
"""


def install_baseline(ref: str, folder: Path) -> Path:
    """``ref``'s code, installed (without dependencies) into ``folder``/site."""
    tree = folder / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tree), ref],
                   check=True, capture_output=True)
    site = folder / "site"
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(site), str(tree)], check=True, capture_output=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
    return site


def _median_time(command: list[str], env: dict, repeats: int) -> tuple[float, bool]:
    times, ok = [], True
    for _ in range(repeats):
        seconds, proc = _run(command, env)
        ok = ok and proc.returncode == 0
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
        times.append(seconds)
    return float(np.median(times)), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument("--baseline", metavar="REF",
                        help="git commit to time the same backtest against (item 4)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rate = env_throughput()
    rows = [("batched env throughput", f"{rate:,.0f} steps/s", ">= 20,000", rate >= 20_000)]

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "QUANTORCH_DB": str(Path(tmp) / "q.duckdb"), "BENCH_CWD": tmp}
        quantorch = [sys.executable, "-m", "quantorch.cli.main"]
        if not args.skip_train:
            seconds, proc = _run([*quantorch, "train", "--seed", "42", "--out", str(Path(tmp) / "p.pt")], env)
            ok = proc.returncode == 0
            rows.append(("quantorch train (shipped settings)", f"{seconds:,.1f} s" if ok else "failed",
                         "<= 600 s", ok and seconds <= 600))
            if not ok:
                print(proc.stderr[-2000:])
        if not args.skip_backtest:
            backtest = ["backtest", "--start", "2020", "--json"]
            _run([*quantorch, *backtest], env)  # cold: loads data
            seconds, proc = _run([*quantorch, *backtest], env)
            ok = proc.returncode == 0
            rows.append(("quantorch backtest --start 2020 (policy, warm)", f"{seconds:,.1f} s" if ok else "failed",
                         "<= 30 s", ok and seconds <= 30))
            if not ok:
                print(proc.stderr[-2000:])
            if args.baseline:
                site = install_baseline(args.baseline, Path(tmp) / "baseline")
                shim = [sys.executable, "-c", _BASELINE_SHIM, str(site)]
                base_db = {**env, "QUANTORCH_DB": str(Path(tmp) / "baseline.duckdb")}
                _run([*shim, *backtest], base_db)  # its own database, prices loaded
                new_times, old_times = [], []
                for _ in range(args.repeats):  # alternate, so load on the machine hits both
                    new_times.append(_run([*quantorch, *backtest], env)[0])
                    old_times.append(_run([*shim, *backtest], base_db)[0])
                new, old = float(np.median(new_times)), float(np.median(old_times))
                rows.append((f"backtest: this code / {args.baseline[:10]}",
                             f"{new:.1f} / {old:.1f} s = {new / old:.2f}x", "<= 1.10x",
                             new / old <= 1.10))
            panel, ok_panel = _median_time([*quantorch, *backtest], env, args.repeats)
            cold_env = {**env, "QUANTORCH_DB": str(Path(tmp) / "cold.duckdb")}
            _run([*quantorch, "data", "fetch"], cold_env)
            live = [*quantorch, *backtest, "--tool-calls", "live"]
            cold, ok_cold = _median_time(live, cold_env, 1)  # the first: an empty tool cache
            warm, ok_warm = _median_time(live, cold_env, args.repeats)
            rows.append(("--tool-calls live, empty cache / panel",
                         f"{cold:.1f} / {panel:.1f} s = {cold / panel:.2f}x", "<= 3x",
                         ok_panel and ok_cold and cold / panel <= 3))
            rows.append(("--tool-calls live, warm cache / panel",
                         f"{warm:.1f} / {panel:.1f} s = {warm / panel:.2f}x", "<= 3x",
                         ok_panel and ok_warm and warm / panel <= 3))

    print(f"\n{'measure':<48} {'value':>16} {'target':>10}  result")
    for name, value, target, passed in rows:
        print(f"{name:<48} {value:>16} {target:>10}  {'PASS' if passed else 'FAIL'}")


if __name__ == "__main__":
    main()

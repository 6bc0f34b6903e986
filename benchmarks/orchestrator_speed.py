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
    from quantorch.store import Store
    from quantorch.training.data import market_for, period_dataset, resolve_slots

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-backtest", action="store_true")
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
            _run([*quantorch, "backtest", "--start", "2020", "--json"], env)  # cold: loads data
            seconds, proc = _run([*quantorch, "backtest", "--start", "2020", "--json"], env)
            ok = proc.returncode == 0
            rows.append(("quantorch backtest --start 2020 (policy, warm)", f"{seconds:,.1f} s" if ok else "failed",
                         "<= 30 s", ok and seconds <= 30))
            if not ok:
                print(proc.stderr[-2000:])

    print(f"\n{'measure':<48} {'value':>16} {'target':>10}  result")
    for name, value, target, passed in rows:
        print(f"{name:<48} {value:>16} {target:>10}  {'PASS' if passed else 'FAIL'}")


if __name__ == "__main__":
    main()

"""``quantorch train`` and ``quantorch evaluate``: the PPO routing policy and its evaluation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from quantorch.cli._common import (
    ConfigOpt,
    DbOpt,
    DebugOpt,
    EndOpt,
    JsonOpt,
    StartOpt,
    err,
    guard,
    load,
    open_store,
    out,
    parse_date,
)

ProfilesOpt = Annotated[
    Optional[str],
    typer.Option("--profiles", show_default=False,
                 help="Comma-separated profile names or YAML paths; 'all' = every shipped one."),
]


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)


def train(
    train_start: Annotated[Optional[str], typer.Option("--train-start", show_default=False,
                                                       help="First day of the training period.")] = None,
    train_end: Annotated[Optional[str], typer.Option("--train-end", show_default=False,
                                                     help="Last day of the training period.")] = None,
    val_start: Annotated[Optional[str], typer.Option("--val-start", show_default=False,
                                                     help="First day of the validation period.")] = None,
    val_end: Annotated[Optional[str], typer.Option("--val-end", show_default=False,
                                                   help="Last day of the validation period.")] = None,
    profiles: ProfilesOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", show_default=False,
                                                 help="Environment steps to train for.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", show_default=False,
                                                help="Random seed (training is deterministic for it).")] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Checkpoint file to write.")] = Path("policy.pt"),
    all_tools: Annotated[bool, typer.Option(
        "--all-tools", help="Train the all-tools baseline's decision head (forced full routing).")] = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train the routing policy with PPO on a walk-forward split, with early stopping.

    Training and validation periods never overlap; the best validation checkpoint is kept and
    the learning curve is written next to it (.curve.csv). The shipped checkpoint is made with:
    quantorch train --seed 42 --out quantorch/models/policy.pt
    """
    with guard(debug):
        from quantorch.training.pipeline import train_from_config

        cfg = load(config, {
            "training.train_start": parse_date(train_start),
            "training.train_end": parse_date(train_end, is_end=True),
            "training.val_start": parse_date(val_start),
            "training.val_end": parse_date(val_end, is_end=True),
            "training.profiles": _names(profiles),
            "training.steps": steps,
            "seed": seed,
        })
        store = open_store(cfg, db)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task("preparing", total=cfg.training.steps)

            def on_progress(step: int, total: int, row: dict | None) -> None:
                text = "training"
                if row is not None:
                    text = f"training (val reward {row['val_reward']:+.2f} bps, {row['val_calls']:.2f} calls)"
                progress.update(task, completed=min(step, total), description=text)

            outcome = train_from_config(
                cfg, store, out_path, all_tools=all_tools,
                say=lambda msg: progress.update(task, description=msg), on_progress=on_progress,
            )
        result = outcome.result
        out.print(f"checkpoint: {outcome.path} (best validation reward {result.best_validation:+.3f} bps "
                  f"at step {result.best_step:,} of {result.steps_done:,}; "
                  f"{'stopped early' if result.stopped_early else 'ran all steps'}; {result.seconds:.0f}s)")
        out.print(f"learning curve: {outcome.curve_path}")


def evaluate(
    start: StartOpt = None,
    end: EndOpt = None,
    profiles: ProfilesOpt = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Seeds per orchestrator.")] = 5,
    orchestrators: Annotated[Optional[str], typer.Option(
        "--orchestrators", show_default=False,
        help="Comma-separated subset of: policy, all-tools, free-tools, technical-only, random, "
             "buy-and-hold (default: all).")] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare every orchestrator under each profile on a held-out period.

    Prints Sharpe, CAGR, max drawdown, turnover, tool cost, calls per decision and preference
    adherence with confidence intervals, checks the cost-vs-return targets, stores the
    evaluation, and writes an HTML report with the cost-vs-Sharpe plot.

    Example: quantorch evaluate --start 2020 --end 2022-12-28 --seeds 5
    """
    with guard(debug):
        from quantorch.evaluation import evaluate as run_evaluation
        from quantorch.orchestrator.orchestrators import ORCHESTRATORS, make_orchestrator
        from quantorch.toolkit.registry import available_tools
        from quantorch.training.pipeline import resolve_profiles

        cfg = load(config, {
            "backtest.start": parse_date(start),
            "backtest.end": parse_date(end, is_end=True),
            "backtest.strategy": "orchestrator",
            "backtest.rebalance": "weekly",
        })
        names = _names(orchestrators) or list(ORCHESTRATORS)
        for name in names:
            if name not in ORCHESTRATORS:
                make_orchestrator(name, None)  # raises the did-you-mean error
        chosen = resolve_profiles(_names(profiles) or ["all"], available_tools())
        store = open_store(cfg, db)
        with err.status("evaluating", spinner="dots") as status:
            evaluation = run_evaluation(cfg, store, chosen, names, seeds, say=status.update)
        if json_output:
            sys.stdout.write(json.dumps(evaluation.to_json(), allow_nan=False) + "\n")
            return
        table = Table(title=f"held-out {evaluation.start} to {evaluation.end}")
        for column in ("orchestrator", "profile", "Sharpe [95% CI]", "CAGR", "max DD", "turnover",
                       "tool $ total", "calls/dec", "pref. adherence"):
            table.add_column(column, justify="left" if column in {"orchestrator", "profile"} else "right")
        for r in evaluation.rows:
            lo, hi = r.sharpe_ci_bootstrap
            table.add_row(
                r.orchestrator, r.profile, f"{r.sharpe:.2f} [{lo:.2f}, {hi:.2f}]", f"{r.cagr:+.1%}",
                f"{r.max_drawdown:.1%}", f"{r.turnover:.2f}", f"{r.tool_cost_usd:,.2f}",
                f"{r.calls_per_decision:.2f}",
                "n/a" if r.preference_adherence is None else f"{r.preference_adherence:.0%}",
            )
        out.print(table)
        for key, target in evaluation.targets.items():
            mark = "[green]met[/]" if target["met"] else "[red]not met[/]"
            out.print(f"target {key}: {mark} ({target['rule']})")
        out.print(f"run id: {evaluation.run_id}")
        out.print(f"report: {evaluation.report_path}")

"""``quantorch train`` and ``quantorch evaluate``: the PPO routing policy and its evaluation."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from quantorch.cli._common import (
    BarProgress,
    ConfigOpt,
    DbOpt,
    DebugOpt,
    EndOpt,
    JsonOpt,
    StartOpt,
    compact_table,
    err,
    guard,
    load,
    open_store,
    out,
    parse_date,
)

ProfilesOpt = Annotated[
    Optional[str],
    typer.Option("--profiles", metavar="NAMES", show_default=False,
                 help="Comma-separated profile names or YAML files; 'all' = every shipped one "
                      "[default: all]."),
]


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)


def train(
    train_start: Annotated[Optional[str], typer.Option(
        "--train-start", metavar="DATE", show_default=False,
        help="First day of the training period [default: 2005-01-01].")] = None,
    train_end: Annotated[Optional[str], typer.Option(
        "--train-end", metavar="DATE", show_default=False,
        help="Last day of the training period [default: 2018-12-31].")] = None,
    val_start: Annotated[Optional[str], typer.Option(
        "--val-start", metavar="DATE", show_default=False,
        help="First day of the validation period, after the training period "
             "[default: 2019-01-01].")] = None,
    val_end: Annotated[Optional[str], typer.Option(
        "--val-end", metavar="DATE", show_default=False,
        help="Last day of the validation period [default: 2019-12-31].")] = None,
    profiles: ProfilesOpt = None,
    steps: Annotated[Optional[int], typer.Option(
        "--steps", metavar="N", show_default=False,
        help="Environment steps to train for [default: 1000000].")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", metavar="N", show_default=False,
        help="Random seed; training is deterministic for it [default: 42].")] = None,
    out_path: Annotated[Path, typer.Option("--out", metavar="FILE",
                                           help="Checkpoint file to write.")] = Path("policy.pt"),
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
            "training.train_start": parse_date(train_start, flag="--train-start"),
            "training.train_end": parse_date(train_end, is_end=True, flag="--train-end"),
            "training.val_start": parse_date(val_start, flag="--val-start"),
            "training.val_end": parse_date(val_end, is_end=True, flag="--val-end"),
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
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="N",
                                       help="Seeds for the orchestrators that draw random "
                                            "numbers (random).")] = 5,
    orchestrators: Annotated[Optional[str], typer.Option(
        "--orchestrators", metavar="NAMES", show_default=False,
        help="Comma-separated subset of: policy, all-tools, free-tools, technical-only, random, "
             "llm (a chat model at the config's llm.base_url), buy-and-hold (the rule strategy) "
             "[default: all; llm when llm.base_url is set].")] = None,
    walk_forward: Annotated[bool, typer.Option(
        "--walk-forward", help="Refit yearly and test each year from --start to --end out of "
                               "sample, stitched (docs/walkforward.md).")] = False,
    train_years: Annotated[str, typer.Option(
        "--train-years", metavar="N|all",
        help="Walk-forward: training years before each validation year.")] = "all",
    refit: Annotated[str, typer.Option("--refit", metavar="WHEN",
                                       help="Walk-forward: when to retrain (yearly).")] = "yearly",
    workers: Annotated[int, typer.Option("--workers", min=1, metavar="N",
                                         help="Walk-forward: folds run at once.")] = 1,
    executor: Annotated[str, typer.Option(
        "--executor", metavar="local|dask://HOST:PORT",
        help="Walk-forward: where folds run (dask needs quantorch[cluster]).")] = "local",
    steps: Annotated[int | None, typer.Option(
        "--steps", min=1000, metavar="N", show_default=False,
        help="Walk-forward: PPO steps per training [default: training.steps].")] = None,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare every orchestrator under each profile on a held-out period.

    Prints Sharpe (with its block-bootstrap 95% interval), CAGR, max drawdown, turnover, tool
    cost, calls per decision and preference adherence, checks the cost-vs-return targets,
    stores the evaluation, and writes an HTML report with the cost-vs-Sharpe plot.

    Example: quantorch evaluate --start 2020 --end 2022-12-28 --seeds 5

    With --walk-forward: one fold per year from --start to --end (train on the years before,
    validate on the year before, test on the year), stitched out of sample, with paired Sharpe
    differences and the Deflated Sharpe Ratio; an interrupted sweep resumes (docs/walkforward.md).
    Example: quantorch evaluate --walk-forward --start 2008 --end 2022 --workers 2
    """
    with guard(debug):
        from quantorch.orchestrator import check_orchestrator_name
        from quantorch.orchestrator.profiles import list_profiles, load_profile

        cfg = load(config, {
            "backtest.start": parse_date(start),
            "backtest.end": parse_date(end, is_end=True),
            "backtest.strategy": "orchestrator",
            "backtest.rebalance": "weekly",
        })
        from quantorch.evaluation import BASELINE_STRATEGIES, default_evaluated

        names = _names(orchestrators) or list(default_evaluated(cfg))
        for name in names:  # cheap checks first: a typo fails in a second, not after minutes
            if name not in BASELINE_STRATEGIES:
                check_orchestrator_name(name)
        wanted = _names(profiles) or ["all"]
        for name in (list_profiles() if wanted == ["all"] else wanted):
            load_profile(name)
        from quantorch.evaluation import evaluate as run_evaluation
        from quantorch.toolkit.registry import available_tools
        from quantorch.training.pipeline import resolve_profiles

        chosen = resolve_profiles(wanted, available_tools())
        if not walk_forward:
            from quantorch.errors import UserInputError

            given = [flag for flag, value, default in (
                ("--train-years", train_years, "all"), ("--refit", refit, "yearly"),
                ("--workers", workers, 1), ("--executor", executor, "local"),
                ("--steps", steps, None)) if value != default]
            if given:
                raise UserInputError(f"{', '.join(given)} only apply with --walk-forward; add "
                                     "it, or leave them out for a single held-out period")
        store = open_store(cfg, db)
        if walk_forward:
            _walk_forward(cfg, store, chosen, names, start, end, train_years, refit, workers,
                          executor, steps, json_output)
            return
        with BarProgress() as progress:
            evaluation = run_evaluation(cfg, store, chosen, names, seeds, progress=progress)
        if json_output:
            sys.stdout.write(json.dumps(evaluation.to_json(), allow_nan=False) + "\n")
            return
        _print_evaluation(evaluation)


def _walk_forward(cfg, store, chosen, names, start, end, train_years, refit, workers, executor,
                  steps, json_output) -> None:
    from quantorch.errors import UserInputError
    from quantorch.walkforward import make_executor, walk_forward

    if start is None or end is None:
        raise UserInputError("--walk-forward needs --start and --end years (e.g. --start 2016 "
                             "--end 2018)")
    first, last = parse_date(start).year, parse_date(end, is_end=True).year
    if train_years == "all":
        years = None
    elif train_years.isdigit():
        years = int(train_years)
    else:
        raise UserInputError(f"--train-years '{train_years}': give a number of years or 'all'")
    pool, client = make_executor(executor, workers)
    try:
        with BarProgress() as progress:
            result = walk_forward(cfg, store, chosen, names, start_year=first, end_year=last,
                                  train_years=years, refit=refit, executor=pool, workers=workers,
                                  steps=steps, progress=progress)
    finally:
        if pool is not None:
            pool.shutdown()
        if client is not None:
            client.close()
    if json_output:
        sys.stdout.write(json.dumps(result.to_json(), allow_nan=False) + "\n")
        return
    _print_walk_forward(result)


def _print_walk_forward(result) -> None:
    """The walk-forward table: stitched out-of-sample figures, with each fold's Sharpe."""
    years = [f.test_year for f in result.folds]
    table = compact_table(f"walk-forward, out of sample {years[0]}-{years[-1]} "
                          f"({len(years)} yearly folds)")
    for column in ("orch.", "profile", "Sharpe [95% CI]", "DSR", "CAGR", "maxDD", "expo",
                   "$/dec", "calls"):
        table.add_column(column, justify="left" if column in {"orch.", "profile"} else "right",
                         no_wrap=True)

    def num(value, spec):
        return "-" if value is None or math.isnan(value) else format(value, spec)

    for r in result.rows:
        lo, hi = r.sharpe_ci_bootstrap
        table.add_row(
            _SHORT.get(r.orchestrator, r.orchestrator), _SHORT.get(r.profile, r.profile),
            f"{num(r.sharpe, '.2f')} [{num(lo, '.1f')},{num(hi, '.1f')}]",
            num(r.deflated_sharpe, ".2f"), num(r.cagr, "+.1%"), num(r.max_drawdown, ".0%"),
            num(r.exposure, ".2f"), num(r.tool_cost_per_decision_usd, ".4f"),
            num(r.calls_per_decision, ".2f"),
        )
    out.print(table)
    out.print(f"DSR = Deflated Sharpe Ratio over {result.trials} trials (orchestrators x "
              "profiles); expo = mean gross exposure; $/dec = tool cost per decision (USD); "
              "calls = tool calls per decision", style="dim")
    # each fold's Sharpe, in blocks of at most 11 years so a row fits 80 columns ("-0.3")
    blocks = math.ceil(len(years) / 11)
    size = math.ceil(len(years) / blocks)
    for first in range(0, len(years), size):
        block = years[first:first + size]
        title = "Sharpe of each fold's test year (the figures above are stitched from these)"
        folds = compact_table(title if first == 0 else None)
        folds.add_column("orch.", no_wrap=True)
        folds.add_column("profile", no_wrap=True)
        for year in block:
            folds.add_column(str(year) if len(block) <= 6 else f"{year % 100:02d}",
                             justify="right", no_wrap=True)
        for r in result.rows:
            folds.add_row(_SHORT.get(r.orchestrator, r.orchestrator),
                          _SHORT.get(r.profile, r.profile),
                          *(num(r.per_fold_sharpe.get(y), ".1f") for y in block))
        out.print(folds)
    for r in result.rows:
        for baseline, d in r.versus.items():
            style = "green" if d["significant"] and d["difference"] > 0 else (
                "red" if d["significant"] else "dim")
            out.print(f"{r.orchestrator} - {baseline} ({r.profile}): Sharpe "
                      f"{num(d['difference'], '+.2f')} [{num(d['low'], '+.2f')}, "
                      f"{num(d['high'], '+.2f')}] paired 95% CI", style=style)
    if result.targets:
        from quantorch.walkforward import describe_target

        out.print("targets on the stitched test years (docs/walkforward.md):")
        for key, target in result.targets.items():
            mark = "met" if target["met"] else "not met"
            out.print(f"{mark:>7} {key}: {describe_target(key, target)}", markup=False,
                      style="green" if target["met"] else "red")
    out.print(f"folds: {len(result.computed_folds)} computed, {len(result.reused_folds)} reused; "
              f"sweep: {result.sweep_dir}")
    out.print(f"report: {result.report_path}")


#: Short names in the evaluate table (the legend under it spells them out).
_SHORT = {"technical-only": "tech-only", "buy-and-hold": "B&H", "cautious-fundamental": "cautious",
          "active-technical": "active", "cost-conscious-quant": "cost"}


def _print_evaluation(evaluation) -> None:
    """The evaluate table, readable at 80 columns (long names abbreviated, with a legend)."""
    table = compact_table(f"held-out {evaluation.start} to {evaluation.end}")
    table.padding = (0, 0)  # the box's one-space divider only: ten columns fit in 80
    for column in ("orch.", "profile", "Sharpe [95% CI]", "CAGR", "maxDD", "expo", "turn",
                   "tool $", "calls", "pref"):
        table.add_column(column, justify="left" if column in {"orch.", "profile"} else "right",
                         no_wrap=True)
    for r in evaluation.rows:
        lo, hi = r.sharpe_ci_bootstrap
        table.add_row(
            _SHORT.get(r.orchestrator, r.orchestrator), _SHORT.get(r.profile, r.profile),
            f"{r.sharpe:.2f} [{lo:.1f},{hi:.1f}]", f"{r.cagr:+.1%}", f"{r.max_drawdown:.0%}",
            "-" if r.exposure is None else f"{r.exposure:.2f}",
            f"{r.turnover:.1f}", f"{r.tool_cost_usd:,.2f}", f"{r.calls_per_decision:.2f}",
            "-" if r.preference_adherence is None else f"{r.preference_adherence:.0%}",
        )
    out.print(table)
    used = sorted({n for r in evaluation.rows for n in (r.orchestrator, r.profile) if n in _SHORT})
    legend = ", ".join(f"{_SHORT[n]} = {n}" for n in used)
    out.print(
        "expo = mean gross exposure (1 = fully invested); turn = turnover (x/yr); tool $ = tool "
        "cost over the period, with the llm orchestrator's own tokens (USD); calls = tool calls "
        "per decision; pref = preference adherence" + (f"; {legend}" if legend else ""),
        style="dim",
    )
    for r in evaluation.rows:
        if r.matched_cost_ratio is not None:
            saturated = (r.matched_cost_ratio < 1 - 0.05
                         and (r.matched_call_probability or 0.0) >= 0.999)
            out.print(f"{r.orchestrator} spent {r.matched_cost_ratio:.2f}x the policy's realised "
                      f"tool cost per decision ({r.profile})"
                      + ("; it calls at every step and cannot spend more" if saturated else ""))
        elif r.matched_cost_target_usd is not None:  # the policy spent nothing
            out.print(f"{r.orchestrator} spent ${r.tool_cost_per_decision_usd:.4f} per decision; "
                      f"the policy spent nothing ({r.profile})")
    for key, target in evaluation.targets.items():
        mark = "met" if target["met"] else "not met"
        out.print(f"target {key}: {mark} ({target['rule']})",
                  style="green" if target["met"] else "red")
    if evaluation.training_window is not None:
        out.print(f"warning: {evaluation.training_window['message']}", style="bold yellow")
    out.print(f"run id: {evaluation.run_id}")
    out.print(f"report: {evaluation.report_path}")

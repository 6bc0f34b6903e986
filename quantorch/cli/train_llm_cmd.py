"""``quantorch train-llm``: fine-tune a chat model as the orchestrator (TRL: SFT, then GRPO)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from quantorch.cli._common import (
    ConfigOpt,
    DbOpt,
    DebugOpt,
    JsonOpt,
    err,
    error_line,
    guard,
    load,
    open_store,
    out,
    parse_date,
)
from quantorch.cli.orchestrator_cmd import ProfilesOpt, _names

EXIT_MISSING_EXTRA = 2


def register(app: typer.Typer) -> None:
    app.command("train-llm")(train_llm)


def train_llm(
    base: Annotated[str, typer.Option("--base", metavar="MODEL_OR_PATH",
                                      help="Base chat model: a Hugging Face id or a local "
                                           "directory (e.g. Qwen/Qwen3-8B).")],
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR",
                                          help="Output directory (adapter/, merged/, "
                                               "curves.csv, provenance.json).")],
    train_start: Annotated[Optional[str], typer.Option(
        "--train-start", metavar="DATE", show_default=False,
        help="First day of the training period [default: 2005-01-01].")] = None,
    train_end: Annotated[Optional[str], typer.Option(
        "--train-end", metavar="DATE", show_default=False,
        help="Last day of the training period [default: 2018-12-31].")] = None,
    val_start: Annotated[Optional[str], typer.Option(
        "--val-start", metavar="DATE", show_default=False,
        help="First day of the validation period [default: 2019-01-01].")] = None,
    val_end: Annotated[Optional[str], typer.Option(
        "--val-end", metavar="DATE", show_default=False,
        help="Last day of the validation period [default: 2019-12-31].")] = None,
    profiles: ProfilesOpt = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", metavar="N", show_default=False,
        help="Random seed; training is deterministic for it on one device [default: 42].")] = None,
    steps: Annotated[int, typer.Option("--steps", min=0, metavar="N",
                                       help="GRPO steps.")] = 100,
    sft_steps: Annotated[int, typer.Option("--sft-steps", min=0, metavar="N",
                                           help="Distillation (SFT) steps.")] = 100,
    lora_r: Annotated[int, typer.Option("--lora-r", min=1, metavar="R",
                                        help="LoRA rank.")] = 16,
    episodes: Annotated[int, typer.Option(
        "--episodes", min=1, metavar="N",
        help="Training decision points sampled per stage.")] = 2000,
    num_generations: Annotated[int, typer.Option(
        "--num-generations", min=2, metavar="G", help="GRPO rollouts per decision point.")] = 8,
    use_vllm: Annotated[bool, typer.Option("--use-vllm", help="Generate GRPO rollouts with vLLM "
                                           "(colocate mode; a GPU and TRL's vLLM).")] = False,
    vllm_mode: Annotated[str, typer.Option("--vllm-mode", metavar="MODE",
                                           help="colocate (same GPU) or server (`trl "
                                                "vllm-serve` on another GPU).")] = "colocate",
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 weights and training (GPU).")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Recompute activations (less memory).")] = False,
    json_output: JsonOpt = False,
    config: ConfigOpt = None,
    db: DbOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fine-tune a chat model to orchestrate: distil the PPO policy (SFT), then GRPO on the
    decision environment with the reward of `quantorch train`, LoRA; writes an adapter and a
    merged checkpoint that vLLM and transformers serve (docs/llm.md, "Fine-tuning with TRL")."""
    from quantorch.training.llm import INSTALL_HINT, missing_requirements

    missing = missing_requirements()
    if missing:
        error_line(f"train-llm needs {', '.join(missing)}: {INSTALL_HINT}")
        raise typer.Exit(EXIT_MISSING_EXTRA)
    with guard(debug):
        from quantorch.training.llm import LLMTrainSettings, rates_text, train_llm_from_config

        cfg = load(config, {
            "training.train_start": parse_date(train_start, flag="--train-start"),
            "training.train_end": parse_date(train_end, is_end=True, flag="--train-end"),
            "training.val_start": parse_date(val_start, flag="--val-start"),
            "training.val_end": parse_date(val_end, is_end=True, flag="--val-end"),
            "training.profiles": _names(profiles),
            "seed": seed,
        })
        settings = LLMTrainSettings(base=base, seed=cfg.seed, steps=steps, sft_steps=sft_steps,
                                    lora_r=lora_r, episodes=episodes,
                                    num_generations=num_generations, use_vllm=use_vllm,
                                    vllm_mode=vllm_mode, bf16=bf16,
                                    gradient_checkpointing=gradient_checkpointing)
        store = open_store(cfg, db)
        columns = (TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                   TimeRemainingColumn())
        total = max(1, sft_steps + steps)
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task("preparing", total=total)
            seen = {"stage": ""}

            def on_progress(stage: str, step: int, _total: int, row: dict | None) -> None:
                done = step if stage == "sft" else sft_steps + step if stage == "grpo" else None
                text = None
                if row is not None and stage == "sft" and "loss" in row:
                    text = f"SFT (loss {row['loss']:.3f})"
                elif row is not None and stage == "grpo" and "reward" in row:
                    text = f"GRPO (reward {row['reward']:+.2f} bps)"
                elif stage != seen["stage"] and stage in ("sft", "grpo"):
                    text = "SFT" if stage == "sft" else "GRPO"
                seen["stage"] = stage
                progress.update(task, completed=min(done, total) if done is not None else None,
                                description=text or progress.tasks[0].description)

            result = train_llm_from_config(
                cfg, store, out_dir, settings,
                say=lambda msg: progress.update(task, description=msg), on_progress=on_progress)
        tools = [t for t in dict.fromkeys(k.split(":")[0] for k in result.provenance["tools"])]
        if json_output:
            out.print_json(json.dumps({"out": str(result.out), "before": result.before,
                                       "after": result.after,
                                       "training_cutoff": result.provenance["training_cutoff"],
                                       "seconds": round(result.seconds, 1)}))
            return
        if result.before:
            out.print(f"validation before: {rates_text(result.before, tools)}")
            out.print(f"validation after:  {rates_text(result.after, tools)}")
        out.print(f"adapter: {result.out / 'adapter'} (vllm serve {base} --enable-lora "
                  f"--lora-modules trader={result.out / 'adapter'})")
        out.print(f"merged: {result.out / 'merged'} (vllm serve / transformers serve)")
        out.print(f"learning curves: {result.out / 'curves.csv'}; provenance: "
                  f"{result.out / 'provenance.json'} (llm.training_cutoff: "
                  f"{result.provenance['training_cutoff']}); {result.seconds:.0f}s")

"""``quantorch train-llm``: fine-tune a chat model to orchestrate, with TRL, LoRA and the reward
of ``quantorch train``.

Two stages on the same decision points (see docs/llm.md, "Fine-tuning with TRL"):

1. **Distillation warm-up (SFT)**: a teacher (the shipped PPO policy) decides sampled training
   points; :mod:`quantorch.llm.distill` renders each decision as a tool-call conversation in the
   served format; TRL's ``SFTTrainer`` fits a LoRA adapter on the assistant turns.
2. **GRPO on the environment**: TRL's ``GRPOTrainer(environment_factory=...)`` with one
   :mod:`quantorch.llm.environment` class per profile; each dataset row is one decision point, so
   the ``num_generations`` rollouts of a group share one state; the reward is
   :func:`~quantorch.llm.environment.episode_rewards` (``decision_reward`` through the decision
   core). The tool schemas TRL renders are replaced by the serving ones (byte-identical prompts).

The output directory holds ``adapter/`` (peft LoRA: ``vllm serve BASE --enable-lora
--lora-modules NAME=DIR/adapter``), ``merged/`` (``merge_and_unload`` with the tokenizer and its
original chat template: ``vllm serve DIR/merged`` or ``transformers serve DIR/merged``),
``curves.csv`` (learning curves of both stages and the validation rollouts) and
``provenance.json`` (base model, periods, profiles, reward weights, seed, steps and the
``training_cutoff`` to put in the ``llm:`` config). Deterministic for a seed on one device.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from quantorch.llm.distill import distill_conversations
from quantorch.llm.environment import (
    EpisodeSetup,
    environment_classes,
    episode_rewards,
    serving_tools,
)
from quantorch.llm.orchestrator import strip_thinking
from quantorch.llm.prompts import error_content
from quantorch.orchestrator.env import POSITION_BUCKETS
from quantorch.orchestrator.orchestrators import Orchestrator

__all__ = [
    "LLMTrainResult",
    "LLMTrainSettings",
    "missing_requirements",
    "rollout_stats",
    "sample_points",
    "train_llm",
    "train_llm_from_config",
]

#: Reported when the optional extra is missing.
INSTALL_HINT = "pip install 'quantorch[llm-train]'"
_REQUIRED = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")

#: (stage, step, total, row or None) -> None
OnProgress = Callable[[str, int, int, dict | None], None]


def missing_requirements() -> list[str]:
    """The packages of the ``llm-train`` extra that are not importable."""
    import importlib.util

    return [name for name in _REQUIRED if importlib.util.find_spec(name) is None]


class LLMTrainSettings(BaseModel):
    """Hyper-parameters of both stages (CPU-sized defaults for a tiny model; the GPU recipe in
    docs/llm.md scales them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str = Field(description="model id or local path of the base chat model")
    seed: int = 0
    steps: int = Field(100, ge=0, description="GRPO optimiser steps")
    sft_steps: int = Field(100, ge=0, description="SFT optimiser steps")
    lora_r: int = Field(16, ge=1)
    lora_alpha: int | None = Field(None, description="default 2 x lora_r")
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    sft_learning_rate: float = Field(2e-4, gt=0)
    learning_rate: float = Field(5e-5, gt=0, description="GRPO")
    sft_batch_size: int = Field(4, ge=1)
    sft_lr_scheduler: str = Field("constant", description="a transformers scheduler name")
    sft_warmup_ratio: float = Field(0.0, ge=0, lt=1)
    num_generations: int = Field(8, ge=2, description="rollouts per decision point (group)")
    prompts_per_step: int = Field(2, ge=1, description="decision points per GRPO step")
    max_completion_length: int = Field(768, ge=16, description="all turns of one rollout")
    max_rounds: int = Field(6, ge=2, description="replies per decision, as served")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0, description="KL coefficient (0: no reference model)")
    episodes: int = Field(2000, ge=1, description="decision points sampled for each stage")
    sft_max_length: int | None = Field(None, description="tokens per SFT conversation "
                                       "(None: whole; the prompt alone is ~2k tokens)")
    eval_points: int = Field(32, ge=0, description="validation points for the rollout stats")
    eval_max_new_tokens: int = Field(160, ge=16)
    gradient_checkpointing: bool = False
    bf16: bool = False
    use_vllm: bool = False
    vllm_mode: str = Field("colocate", pattern="^(colocate|server)$")


@dataclass
class LLMTrainResult:
    out: Path
    provenance: dict[str, Any]
    before: dict[str, float]
    after: dict[str, float]
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def sample_points(setup: EpisodeSetup, n: int, seed: int) -> tuple[np.ndarray, ...]:
    """``n`` (row, profile, previous position) draws, as the PPO environment resets."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(len(setup.dataset), size=n)
    profile = rng.integers(len(setup.profiles), size=n)
    previous = rng.choice(POSITION_BUCKETS, size=n)
    shorts = np.array([setup.profiles[p].limits.allow_short for p in profile])
    return rows, profile, np.where(shorts, previous, np.abs(previous))


# ---- rollouts with the served rules (validation) ------------------------------------------------

_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _parse(text: str) -> tuple[str, list[dict[str, Any]]]:
    calls = []
    for raw in _CALL.findall(text):
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(payload, dict) and isinstance(payload.get("name"), str):
            arguments = payload.get("arguments") or {}
            calls.append({"type": "function", "function": {
                "name": payload["name"],
                "arguments": arguments if isinstance(arguments, dict) else {}}})
    return strip_thinking(_CALL.sub("", text)), calls


def _dispatch(env, name: str, arguments: dict[str, Any]) -> str:
    method = getattr(type(env), name, None)
    if method is None or name.startswith("_") or name in ("reset", "get_reward"):
        return error_content(f"unknown function '{name}'")
    try:
        return getattr(env, name)(**arguments)
    except TypeError as exc:
        return error_content(f"{name}: {exc}")


def rollout_stats(model, tokenizer, setup: EpisodeSetup, rows, profile_index, previous,
                  *, max_rounds: int = 6, max_new_tokens: int = 160) -> dict[str, float]:
    """Greedy rollouts of the model on the points, through the environment (the served rules;
    a reply without a call ends the decision with the fallback, as in GRPO): mean reward, the
    share of decisions calling each tool, the fallback share."""
    import torch

    classes = environment_classes(setup)
    envs, completions, lengths = [], [], []
    model.eval()
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    eos = [t for t in eos if t is not None]
    for row, p, prev in zip(rows, profile_index, previous, strict=True):
        env = classes[setup.profiles[int(p)].name]()
        env.reset(row=int(row), previous_position=float(prev))
        messages = setup.prompt(int(row), int(p), float(prev))
        tools = serving_tools(setup, int(p))
        said, generated = [], 0
        for _ in range(max_rounds):
            ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                tokenize=True, return_dict=True)["input_ids"]
            if not said:
                env.prompt_tokens = len(ids)
            with torch.no_grad():
                out = model.generate(torch.tensor([ids], device=model.device),
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            new = out[0, len(ids):].tolist()
            generated += len(new)
            text = tokenizer.decode(new, skip_special_tokens=False).split("<|im_end|>")[0]
            content, calls = _parse(text)
            message = {"role": "assistant", "content": content}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            said.append(message)
            if not calls:
                break
            for call in calls:
                result = _dispatch(env, call["function"]["name"], call["function"]["arguments"])
                messages.append({"role": "tool", "content": result})
            if env.ended:
                break
        envs.append(env)
        completions.append(said)
        lengths.append([0] * generated)
    rewards = episode_rewards(envs, completions=completions, completion_ids=lengths)
    stats = {"reward": float(np.mean(rewards)) if rewards else math.nan,
             "fallback_rate": float(np.mean([e.bucket is None or e.fallback is not None
                                             for e in envs])) if envs else math.nan}
    for tool in dict.fromkeys(s.tool for s in setup.dataset.slots):
        stats[f"call_rate.{tool}"] = float(np.mean([
            any(setup.dataset.slots[k].tool == tool for k in e.calls) for e in envs
        ])) if envs else math.nan
    return stats


# ---- the pipeline --------------------------------------------------------------------------------

def _grpo_rows(setup: EpisodeSetup, tokenizer, rows, profile_index, previous) -> list[dict]:
    out = []
    prompt_tokens: dict[tuple[int, int, float], int] = {}
    for row, p, prev in zip(rows, profile_index, previous, strict=True):
        key = (int(row), int(p), float(prev))
        prompt = setup.prompt(*key)
        if key not in prompt_tokens:
            prompt_tokens[key] = len(tokenizer.apply_chat_template(
                prompt, tools=serving_tools(setup, int(p)), add_generation_prompt=True,
                tokenize=True, return_dict=True)["input_ids"])
        out.append({"prompt": prompt, "environment": setup.profiles[int(p)].name,
                    "row": int(row), "previous_position": float(prev),
                    "prompt_tokens": prompt_tokens[key]})
    return out


def _serving_schema_trainer(grpo_trainer_cls, setup: EpisodeSetup):
    """GRPOTrainer that renders the serving tool schemas (TRL renders the environment methods'
    own, built by transformers' ``get_json_schema``; see quantorch.llm.environment)."""

    class ServingSchemaGRPOTrainer(grpo_trainer_cls):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if not isinstance(getattr(self, "_env_tools", None), dict):
                raise RuntimeError(
                    "this TRL version keeps no per-environment tool list (_env_tools); the "
                    "served tool schemas cannot be installed: use trl>=1.16,<2")
            for index, profile in enumerate(setup.profiles):
                if profile.name in self._env_tools:
                    self._env_tools[profile.name] = serving_tools(setup, index)

    return ServingSchemaGRPOTrainer


def _curve_callback(curve: list[dict], stage: str, total: int, on_progress: OnProgress | None):
    from transformers import TrainerCallback

    class _Curve(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "train_runtime" in logs:
                return
            row = {"stage": stage, "step": state.global_step}
            row.update({k: v for k, v in logs.items() if isinstance(v, int | float)})
            curve.append(row)
            if on_progress:
                on_progress(stage, state.global_step, total, row)

        def on_step_end(self, args, state, control, **kwargs):
            if on_progress:
                on_progress(stage, state.global_step, total, None)

    return _Curve()


def _quiet(trainer) -> None:
    """No log dicts printed: the curves and the progress callback report instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)


def _write_curve(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def train_llm(
    train: EpisodeSetup,
    validation: EpisodeSetup,
    teacher: Orchestrator,
    settings: LLMTrainSettings,
    out: Path,
    *,
    meta: dict[str, Any] | None = None,
    on_progress: OnProgress | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> LLMTrainResult:
    """Both stages, then the adapter, the merged checkpoint, the curves and the provenance."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(settings.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)  # several threads are far slower on small CPUs
    tokenizer = AutoTokenizer.from_pretrained(settings.base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(settings.base, dtype=dtype)
    curve: list[dict[str, Any]] = []

    val_points = sample_points(validation, settings.eval_points, settings.seed + 1)

    def evaluate(stage: str) -> dict[str, float]:
        if settings.eval_points == 0:
            return {}
        say(f"validation rollouts ({stage})")
        stats = rollout_stats(model_now(), tokenizer, validation, *val_points,
                              max_rounds=settings.max_rounds,
                              max_new_tokens=settings.eval_max_new_tokens)
        curve.append({"stage": f"eval:{stage}", "step": 0, **stats})
        if on_progress:
            on_progress("eval", 0, 0, {"stage": stage, **stats})
        return stats

    holder = {"model": model}

    def model_now():
        return holder["model"]

    before = evaluate("base")

    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha or 2 * settings.lora_r,
                      lora_dropout=settings.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    common = {"seed": settings.seed, "data_seed": settings.seed, "report_to": [],
              "save_strategy": "no", "logging_steps": 1, "bf16": settings.bf16,
              "gradient_checkpointing": settings.gradient_checkpointing,
              "dataloader_num_workers": 0, "disable_tqdm": True}

    # Stage 1: the teacher's decisions as conversations
    rows, profile, previous = sample_points(train, settings.episodes, settings.seed)
    if settings.sft_steps:
        say(f"distilling the teacher on {len(rows):,} training points")
        conversations = distill_conversations(teacher, train, rows, profile, previous)
        sft_data = Dataset.from_list([{"messages": c["messages"], "tools": c["tools"]}
                                      for c in conversations])
        sft = SFTTrainer(
            model=model,
            args=SFTConfig(output_dir=str(out / "_sft"), max_steps=settings.sft_steps,
                           per_device_train_batch_size=settings.sft_batch_size,
                           learning_rate=settings.sft_learning_rate, assistant_only_loss=True,
                           lr_scheduler_type=settings.sft_lr_scheduler,
                           warmup_steps=int(settings.sft_warmup_ratio * settings.sft_steps),
                           max_length=settings.sft_max_length,
                           **common),
            train_dataset=sft_data, processing_class=tokenizer, peft_config=lora,
            callbacks=[_curve_callback(curve, "sft", settings.sft_steps, on_progress)],
        )
        _quiet(sft)
        say(f"SFT: {settings.sft_steps} steps")
        sft.train()
        holder["model"] = sft.model
    else:
        from peft import get_peft_model

        holder["model"] = get_peft_model(model, lora)
    after_sft = evaluate("sft")

    # Stage 2: GRPO on the environment
    if settings.steps:
        grpo_rows = _grpo_rows(train, tokenizer, *sample_points(train, settings.episodes,
                                                                settings.seed + 2))
        batch = settings.prompts_per_step * settings.num_generations
        trainer_cls = _serving_schema_trainer(GRPOTrainer, train)
        grpo = trainer_cls(
            model=holder["model"],
            reward_funcs=[episode_rewards],
            args=GRPOConfig(
                output_dir=str(out / "_grpo"), max_steps=settings.steps,
                per_device_train_batch_size=batch, num_generations=settings.num_generations,
                learning_rate=settings.learning_rate, beta=settings.beta,
                temperature=settings.temperature,
                max_completion_length=settings.max_completion_length,
                max_tool_calling_iterations=settings.max_rounds - 1,
                use_vllm=settings.use_vllm, vllm_mode=settings.vllm_mode,
                lr_scheduler_type="constant", **common),
            train_dataset=Dataset.from_list(grpo_rows), processing_class=tokenizer,
            environment_factory=environment_classes(train),
            callbacks=[_curve_callback(curve, "grpo", settings.steps, on_progress)],
        )
        _quiet(grpo)
        say(f"GRPO: {settings.steps} steps x {settings.prompts_per_step} points x "
            f"{settings.num_generations} rollouts")
        grpo.train()
        holder["model"] = grpo.model
    after = evaluate("grpo")

    # Outputs: the adapter, the merged checkpoint with the original tokenizer and template
    say("saving the adapter and the merged checkpoint")
    peft_model = holder["model"]
    peft_model.save_pretrained(out / "adapter")
    served_tokenizer = AutoTokenizer.from_pretrained(settings.base)
    served_tokenizer.save_pretrained(out / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    served_tokenizer.save_pretrained(out / "merged")
    _write_curve(out / "curves.csv", curve)
    provenance = {
        "base_model": settings.base,
        "settings": settings.model_dump(),
        "profiles": [p.name for p in train.profiles],
        "reward_weights": {p.name: p.reward.model_dump() for p in train.profiles},
        "budget_bps": {p.name: p.budget_bps for p in train.profiles},
        "tools": [s.key for s in train.dataset.slots],
        "horizon": train.dataset.horizon,
        "costs_bps": [train.env_config.fee_bps, train.env_config.slippage_bps],
        "train_rows": len(train.dataset),
        "validation_rows": len(validation.dataset),
        "training_cutoff": _cutoff(train),
        "before": before, "after_sft": after_sft, "after": after,
        "seconds": round(time.perf_counter() - started, 1),
        "trained_at": dt.datetime.now(dt.UTC).isoformat(),
        **(meta or {}),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
    for scratch in ("_sft", "_grpo"):
        _remove(out / scratch)
    return LLMTrainResult(out, provenance, before, after, curve,
                          time.perf_counter() - started)


def _cutoff(*setups: EpisodeSetup) -> str:
    """The last session whose data (prices through the forward return) training read: the last
    decision date plus the horizon and the fill (a date; the ``llm.training_cutoff``)."""
    last = max(np.datetime64(np.max(s.dataset.dates), "D") for s in setups)
    horizon = max(s.dataset.horizon for s in setups)
    return str(np.busday_offset(last, horizon + 1, roll="forward"))


def _remove(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def rates_text(stats: dict[str, float], tools: Sequence[str]) -> str:
    """One line of rollout stats (for the CLI and the tests)."""
    calls = ", ".join(f"{t} {stats.get(f'call_rate.{t}', math.nan):.0%}" for t in tools)
    return (f"reward {stats.get('reward', math.nan):+.2f} bps; calls: {calls}; "
            f"fallbacks {stats.get('fallback_rate', math.nan):.0%}")


def train_llm_from_config(config, store, out: Path, settings: LLMTrainSettings, *,
                          say: Callable[[str], None] = lambda _m: None,
                          on_progress: OnProgress | None = None) -> LLMTrainResult:
    """``quantorch train-llm``: the config's periods and profiles, the shipped policy's slots,
    normalisation and horizon (the ``llm`` orchestrator routes between the same slots when
    served), the policy as the distillation teacher, the ``llm:`` token prices."""
    from quantorch.data import calendar
    from quantorch.data.providers.sample import FACTOR_ETFS
    from quantorch.data.service import ensure_prices
    from quantorch.errors import UserInputError
    from quantorch.kernel.factory import load_policies
    from quantorch.llm.orchestrator import LLMSettingsView
    from quantorch.orchestrator.env import EnvConfig
    from quantorch.orchestrator.orchestrators import PolicyOrchestrator
    from quantorch.orchestrator.slots import WARMUP_SESSIONS
    from quantorch.store import code_version
    from quantorch.toolkit.registry import get_tool
    from quantorch.training.data import market_for, period_datasets
    from quantorch.training.pipeline import resolve_profiles

    periods = config.training
    policy, _ = load_policies(config, False)
    slots = list(policy.slots)
    tools = sorted({s.tool for s in slots})
    profiles = resolve_profiles(list(periods.profiles), tools)
    say("loading prices")
    first = calendar.shift_sessions(periods.train_start, -WARMUP_SESSIONS).date()
    wanted = list(config.universe)
    if config.benchmark_symbol:
        wanted.append(config.benchmark_symbol)
    if config.data.source == "sample":
        wanted += [t for t in FACTOR_ETFS if t not in wanted]
    ensure_prices(store, config.data.source, wanted, first, periods.val_end)
    market = market_for(config, store, periods.train_start, periods.val_end)
    extra = config.tools.extra_dirs
    say("computing tool panels for the training and validation periods")
    datasets = [d.tradable() for d in period_datasets(
        market, slots,
        [(periods.train_start, periods.train_end), (periods.val_start, periods.val_end)],
        policy.horizon, normalisation=policy.normalisation, extra_dirs=extra)]
    if not all(len(d) for d in datasets):
        raise UserInputError(
            "no decision points with a known forward return in the training or validation "
            "period; widen --train-start/--train-end/--val-start/--val-end")
    specs = {s.tool: get_tool(s.tool, tuple(extra)).spec for s in slots}
    env_config = EnvConfig(fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps)
    view = LLMSettingsView.from_config(config.llm)
    train, validation = (EpisodeSetup(d, profiles, specs, env_config, view) for d in datasets)
    meta = {
        "train_period": [periods.train_start.isoformat(), periods.train_end.isoformat()],
        "validation_period": [periods.val_start.isoformat(), periods.val_end.isoformat()],
        "teacher": str(policy.meta.get("path", "policy.pt")),
        "universe": list(config.universe), "source": config.data.source,
        "seed": settings.seed, "config_hash": config.config_hash(),
        "training_cutoff": periods.train_end.isoformat(),
        "code_version": code_version(),
    }
    return train_llm(train, validation, PolicyOrchestrator(policy), settings, out, meta=meta,
                     on_progress=on_progress, say=say)

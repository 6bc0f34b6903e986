"""``train-llm`` end to end on this CPU machine: the tiny random Qwen3 of tests/support (warmed
on the served format only: it calls ``technical`` out of habit, see ``planted_base_dir``) is
distilled from a teacher and
trained with GRPO on a planted-signal task (``risk:fast`` carries the sign of the forward return,
``technical:basic`` is priced noise); its validation rollouts must call the planted tool more,
the noise tool less, and earn more than before. Then the merged checkpoint is served by
``transformers serve`` and drives ``quantorch backtest --orchestrator llm``. The figures are a
test of the machinery, not of trading skill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import load_config
from tests.support.llm_training import (
    NOISE,
    PLANTED,
    SignalTeacher,
    planted_base_dir,
    planted_setup,
)
from tests.support.tiny_llm import missing_requirements, serve

pytestmark = pytest.mark.slow
runner = CliRunner()

PLANTED_TOOL, NOISE_TOOL = PLANTED.split(":")[0], NOISE.split(":")[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    missing = missing_requirements() + [m for m in ("peft", "datasets")
                                        if __import__("importlib").util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[dev]')")
    import torch

    from quantorch.training.llm import LLMTrainSettings, rates_text, train_llm

    torch.set_num_threads(1)
    base = planted_base_dir()
    out = tmp_path_factory.mktemp("train-llm")
    settings = LLMTrainSettings(
        base=str(base), seed=0, sft_steps=SFT_STEPS, steps=GRPO_STEPS, lora_r=8,
        sft_learning_rate=SFT_LR, learning_rate=GRPO_LR, sft_batch_size=4, num_generations=4,
        prompts_per_step=2, max_completion_length=512, episodes=64, eval_points=24,
        eval_max_new_tokens=96,
    )
    result = train_llm(planted_setup(64, seed=0), planted_setup(48, seed=1), SignalTeacher(),
                       settings, out)
    tools = [NOISE_TOOL, PLANTED_TOOL]
    print(f"\nbefore:    {rates_text(result.before, tools)}")
    print(f"after SFT: {rates_text(result.provenance['after_sft'], tools)}")
    print(f"after:     {rates_text(result.after, tools)}  ({result.seconds:.0f}s)")
    return {"result": result, "out": out}


SFT_STEPS, GRPO_STEPS, SFT_LR, GRPO_LR = 40, 24, 5e-4, 1e-4


def test_training_moves_the_model_onto_the_planted_tool(trained):
    """Fragile by nature: on 24 validation points with random held positions (which a
    fallback keeps) the reward's noise is about +-70 bps, and a few dozen steps teach a tiny
    random model which tool to call before they teach it to read the sign of its output. It
    holds for the cached base of these prompts; a base rebuilt for other prompts (any change to
    a tool's description) can fail the reward line while the routing lines hold."""
    before, after = trained["result"].before, trained["result"].after
    assert after[f"call_rate.{PLANTED_TOOL}"] > before[f"call_rate.{PLANTED_TOOL}"]
    assert after[f"call_rate.{NOISE_TOOL}"] < before[f"call_rate.{NOISE_TOOL}"]
    assert after["reward"] > before["reward"]


def test_the_output_directory(trained):
    out: Path = trained["out"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert (out / "merged" / "config.json").is_file()
    assert (out / "merged" / "tokenizer_config.json").is_file()
    provenance = json.loads((out / "provenance.json").read_text())
    for key in ("base_model", "profiles", "reward_weights", "training_cutoff", "settings",
                "tools"):
        assert key in provenance
    assert provenance["settings"]["seed"] == 0 and provenance["settings"]["steps"] == GRPO_STEPS
    curves = (out / "curves.csv").read_text().splitlines()
    stages = {line.split(",")[0] for line in curves[1:]}
    assert {"sft", "grpo", "eval:base", "eval:grpo"} <= stages


def test_the_merged_checkpoint_serves_a_backtest_and_joins_evaluate(trained, loaded_db, tmp_path):
    merged = trained["out"] / "merged"
    config = tmp_path / "llm.yaml"
    period = ["--start", "2021-01-04", "--end", "2021-01-15"]
    with serve(merged) as server:
        config.write_text(yaml.safe_dump({"universe": load_config().universe[:2], "llm": {
            "base_url": server.base_url, "model": server.model, "max_concurrency": 2,
            "timeout_s": 300, "max_tokens": 128}}))
        result = runner.invoke(app, ["backtest", "--orchestrator", "llm", *period, "--config",
                                     str(config), "--db", str(loaded_db), "--json"],
                               catch_exceptions=False)
        # the fine-tuned model beside the compact policy and the baselines, same period and
        # costs (the backtest's conversations are cached: evaluate's llm row replays them)
        evaluated = runner.invoke(app, ["evaluate", *period, "--profiles", "neutral",
                                        "--orchestrators", "policy,llm,free-tools,buy-and-hold",
                                        "--seeds", "1", "--config", str(config), "--db",
                                        str(loaded_db), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    outcome = json.loads(result.stdout)
    llm = outcome["tools"]["llm"]
    print(f"\nserved backtest: {llm['decisions']} decisions, fallback rate "
          f"{llm['fallback_rate']:.0%}, tool mix {outcome['tools']['tool_mix']}")
    assert llm["decisions"] > 0 and llm["completion_tokens"] > 0
    assert evaluated.exit_code == 0, evaluated.stderr
    rows = {r["orchestrator"]: r for r in json.loads(evaluated.stdout)["results"]}
    assert set(rows) == {"policy", "llm", "free-tools", "buy-and-hold"}
    for name, row in rows.items():
        print(f"evaluate {name}: Sharpe {row['sharpe']}, cost ${row['tool_cost_usd']:.4f}, "
              f"calls/decision {row['calls_per_decision']:.2f}")
    # the llm row's cost includes its own tokens, which the tools-only rows do not have
    assert rows["llm"]["tool_cost_usd"] > 0 and rows["free-tools"]["tool_cost_usd"] == 0


def test_grpo_renders_the_served_prompt_token_for_token(tmp_path):
    """The trainer itself (not a re-implementation of it) renders what is served."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from quantorch.llm.environment import environment_classes, episode_rewards
    from quantorch.training.llm import _grpo_rows, _serving_schema_trainer
    from tests.unit.test_llm_environment import served_request

    torch.set_num_threads(1)
    base = planted_base_dir()
    tok = AutoTokenizer.from_pretrained(base)
    setup = planted_setup(16)
    rows = _grpo_rows(setup, tok, [3, 4], [0, 0], [0.5, -0.5])
    trainer = _serving_schema_trainer(GRPOTrainer, setup)(
        model=AutoModelForCausalLM.from_pretrained(base), reward_funcs=[episode_rewards],
        args=GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2,
                        num_generations=2, max_steps=1, report_to=[], bf16=False),
        train_dataset=Dataset.from_list(rows), processing_class=tok,
        environment_factory=environment_classes(setup))
    trainer._batch_environments = ["planted", "planted"]
    trained, _, _ = trainer._tokenize_prompts([r["prompt"] for r in rows])
    for ids, (row, previous) in zip(trained, [(3, 0.5), (4, -0.5)], strict=True):
        messages, tools = served_request(setup, row, 0, previous)
        served = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
        assert list(ids) == list(served)


def test_train_llm_is_deterministic_for_a_seed(tmp_path):
    """Two runs of both stages with one seed write the same adapter, bit for bit, and the same
    validation figures (on one device; a GPU's kernels may differ from a CPU's)."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    import torch
    from safetensors.torch import load_file

    from quantorch.training.llm import LLMTrainSettings, train_llm

    torch.set_num_threads(1)
    settings = LLMTrainSettings(
        base=str(planted_base_dir()), seed=3, sft_steps=4, steps=2, lora_r=4,
        sft_learning_rate=SFT_LR, learning_rate=GRPO_LR, sft_batch_size=2, num_generations=2,
        prompts_per_step=1, max_completion_length=128, episodes=8, eval_points=4,
        eval_max_new_tokens=48,
    )
    runs = [train_llm(planted_setup(16, seed=0), planted_setup(8, seed=1), SignalTeacher(),
                      settings, tmp_path / f"run{i}") for i in range(2)]
    weights = [load_file(r.out / "adapter" / "adapter_model.safetensors") for r in runs]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    # trained at all: LoRA's B matrices start at zero
    assert any(t.abs().sum() > 0 for n, t in weights[0].items() if "lora_B" in n)
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert runs[0].before == runs[1].before and runs[0].after == runs[1].after
    curves = [[{k: v for k, v in row.items() if "second" not in k and "time" not in k}
               for row in r.curve] for r in runs]
    assert curves[0] == curves[1]

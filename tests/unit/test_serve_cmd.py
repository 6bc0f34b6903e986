"""``quantorch serve llm``: the vLLM command it prints, the config it points at, and --run with
a fake ``vllm`` on PATH (vLLM itself is never installed in quantorch's environment)."""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap

import pytest
import yaml
from typer.testing import CliRunner

from quantorch.cli.main import app
from quantorch.config import LLMConfig
from quantorch.errors import UserInputError
from quantorch.llm.serving import (
    LoraAdapter,
    base_url,
    find_vllm,
    parse_lora,
    vllm_command,
)

runner = CliRunner()
HERMES = ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]


def serve(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, ["serve", "llm", *args], env=env, catch_exceptions=False)


def printed(result) -> tuple[list[str], dict]:
    """The command (first line that is not a comment) and the YAML config below it."""
    lines = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    return shlex.split(lines[0]), yaml.safe_load("\n".join(lines[1:]))


def contains(argv: list[str], part: list[str]) -> bool:
    return any(argv[i:i + len(part)] == part for i in range(len(argv)))


@pytest.fixture
def fake_vllm(tmp_path):
    """A ``vllm`` on PATH that records its argv as JSON and exits with $FAKE_VLLM_EXIT."""
    folder = tmp_path / "bin"
    folder.mkdir()
    record = tmp_path / "argv.json"
    script = folder / "vllm"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        with open({str(record)!r}, "w") as handle:
            json.dump(sys.argv[1:], handle)
        sys.exit(int(os.environ.get("FAKE_VLLM_EXIT", "0")))
        """))
    script.chmod(0o755)
    return folder, record


def test_default_command_has_tool_calling_and_prefix_caching():
    result = serve()
    assert result.exit_code == 0, result.stderr
    argv, config = printed(result)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-8B"]
    assert contains(argv, HERMES) and "--enable-prefix-caching" in argv
    assert contains(argv, ["--host", "127.0.0.1"]) and contains(argv, ["--port", "8000"])
    assert contains(argv, ["--max-model-len", "16384"])
    assert "--enable-lora" not in argv and "--served-model-name" not in argv
    assert argv == vllm_command()  # the one builder the GPU script also uses
    # the snippet is a valid llm: section pointing at that server
    llm = LLMConfig.model_validate(config["llm"])
    assert llm.base_url == "http://127.0.0.1:8000/v1" and llm.model == "Qwen/Qwen3-8B"


def test_options_reach_the_command_and_the_config():
    result = serve("--model", "/models/qwen3 8b", "--host", "0.0.0.0", "--port", "8100",
                   "--served-model-name", "qwen3", "--max-model-len", "0",
                   "--gpu-memory-utilization", "0.5")
    assert result.exit_code == 0, result.stderr
    argv, config = printed(result)
    assert argv[2] == "/models/qwen3 8b"  # shell-quoted: a path with a space survives
    assert contains(argv, ["--served-model-name", "qwen3"])
    assert contains(argv, ["--gpu-memory-utilization", "0.5"])
    assert "--max-model-len" not in argv  # 0: the model's own maximum
    # bound to every interface, reached locally
    assert config["llm"] == {"base_url": "http://127.0.0.1:8100/v1", "model": "qwen3"}


def test_lora_adds_enable_lora_and_modules(tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "adapter_config.json").write_text(json.dumps({"r": 48, "peft_type": "LORA"}))
    result = serve("--lora", "trader=/adapters/trader", "--lora", f"wide={wide}")
    assert result.exit_code == 0, result.stderr
    argv, config = printed(result)
    assert "--enable-lora" in argv
    assert contains(argv, ["--max-lora-rank", "64"])  # rank 48 is above vLLM's 16: rounded up
    at = argv.index("--lora-modules")
    assert argv[at + 1:] == ["trader=/adapters/trader", f"wide={wide}"]  # last: nargs='+'
    assert contains(argv, HERMES) and "--enable-prefix-caching" in argv
    assert config["llm"]["model"] == "trader"  # requests ask for the adapter by its name


@pytest.mark.parametrize("bad, message", [
    ("trader", "use NAME=PATH"),
    ("=/adapters/x", "use NAME=PATH"),
    ("my adapter=/x", "bad --lora name"),
    ("x=/a=b", "'='"),
])
def test_bad_lora_is_refused_in_one_line(bad, message):
    result = serve("--lora", bad)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_lora_names_must_differ_from_each_other_and_the_base():
    twice = serve("--lora", "a=/x", "--lora", "a=/y")
    assert twice.exit_code == 2 and "given twice" in twice.stderr
    clash = serve("--served-model-name", "a", "--lora", "a=/x")
    assert clash.exit_code == 2 and "base model's name" in clash.stderr


def test_json_is_one_object_with_command_and_config():
    result = serve("--json", "--served-model-name", "qwen3", "--lora", "t=/adapters/t")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    payload = json.loads(result.stdout)
    assert payload["command"] == vllm_command(served_model_name="qwen3",
                                              loras=[LoraAdapter("t", "/adapters/t")])
    assert shlex.split(payload["command_line"]) == payload["command"]
    assert payload["config"] == {"llm": {"base_url": "http://127.0.0.1:8000/v1", "model": "t"}}
    assert yaml.safe_load(payload["config_yaml"]) == payload["config"]
    assert payload["licence_note"] is None


def test_research_only_model_carries_a_licence_note():
    result = serve("--model", "nvidia/Nemotron-Orchestrator-8B")
    assert result.exit_code == 0
    assert "research" in result.stderr and "Qwen/Qwen3-8B" in result.stderr
    assert printed(result)[0][2] == "nvidia/Nemotron-Orchestrator-8B"
    payload = json.loads(serve("--model", "nvidia/Nemotron-Orchestrator-8B", "--json").stdout)
    assert "research" in payload["licence_note"]


def test_run_without_vllm_on_path_exits_2_with_the_fix(tmp_path):
    result = serve("--run", env={"PATH": str(tmp_path)})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "vllm is not on PATH" in lines[0]
    assert "python -m venv ~/vllm && ~/vllm/bin/pip install vllm" in lines[0]
    assert "--vllm" in lines[0] and "Traceback" not in result.stderr


def test_run_starts_vllm_from_path_with_the_printed_argv(fake_vllm):
    folder, record = fake_vllm
    env = {"PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = serve("--run", "--port", "8123", "--lora", "t=/adapters/t", env=env)
    assert result.exit_code == 0, result.stderr
    expected = vllm_command(port=8123, loras=[LoraAdapter("t", "/adapters/t")],
                            executable=str(folder / "vllm"))
    assert json.loads(record.read_text()) == expected[1:]
    assert "starting:" in result.stderr and "base_url: http://127.0.0.1:8123/v1" in result.stderr


def test_run_with_vllm_option_and_its_exit_status(fake_vllm, tmp_path):
    folder, record = fake_vllm
    venv = folder.parent  # --vllm takes the environment folder (bin/vllm inside) or the file
    result = serve("--run", "--vllm", str(venv), env={"PATH": str(tmp_path),
                                                       "FAKE_VLLM_EXIT": "3"})
    assert result.exit_code == 3
    assert "vllm exited with status 3" in result.stderr
    assert json.loads(record.read_text())[:2] == ["serve", "Qwen/Qwen3-8B"]
    missing = serve("--run", "--vllm", str(tmp_path / "nowhere" / "vllm"),
                    env={"PATH": str(tmp_path)})
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_run_and_json_together_are_refused():
    result = serve("--run", "--json")
    assert result.exit_code == 2 and "one or the other" in result.stderr


def test_builder_refuses_what_vllm_would():
    with pytest.raises(UserInputError, match="--max-model-len"):
        vllm_command(max_model_len=64)
    with pytest.raises(UserInputError, match="rank"):
        vllm_command(loras=[LoraAdapter("a", "/x")], max_lora_rank=1024)
    assert "--max-lora-rank" not in vllm_command(loras=[LoraAdapter("a", "/x")], max_lora_rank=16)
    assert parse_lora("a=~/x").path == os.path.expanduser("~/x")


def test_base_url_for_every_kind_of_host():
    assert base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000/v1"
    assert base_url("0.0.0.0", 1) == "http://127.0.0.1:1/v1"
    assert base_url("::", 8000) == "http://[::1]:8000/v1"
    assert base_url("gpu-box", 8000) == "http://gpu-box:8000/v1"


def test_find_vllm_refuses_a_file_that_is_not_executable(tmp_path):
    plain = tmp_path / "vllm"
    plain.write_text("not a program")
    with pytest.raises(UserInputError, match="not executable"):
        find_vllm(plain)

"""Serving an open-weights model for the LLM orchestrator with vLLM, from outside quantorch.

vLLM lives in its own virtual environment or container: quantorch never imports or installs it
(its pins clash with quantorch's). This module only builds the ``vllm serve`` command line
(:func:`vllm_command`, pure, shared by ``quantorch serve llm``, the tests and
``benchmarks/llm_gpu.sh``), the ``llm:`` config section that points at the server
(:func:`llm_settings`, :func:`config_snippet`), finds the ``vllm`` executable
(:func:`find_vllm`) and runs it as a child process (:func:`run_server`).

The flags are the ones Qwen3-8B needs for quantorch's tool calls: ``--enable-auto-tool-choice
--tool-call-parser hermes`` (Qwen3's chat template writes Hermes-style ``<tool_call>`` JSON;
``qwen3_xml``/``qwen3_coder`` are for the Qwen3-Coder XML format) and
``--enable-prefix-caching`` (every decision's prompt starts with the same system prompt and
tool schemas, so their KV cache is computed once).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantorch.errors import UserInputError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_MAX_MODEL_LEN",
    "DEFAULT_MODEL",
    "DEFAULT_PORT",
    "TOOL_CALL_PARSER",
    "LoraAdapter",
    "base_url",
    "config_snippet",
    "find_vllm",
    "licence_note",
    "llm_settings",
    "lora_rank",
    "parse_lora",
    "run_server",
    "vllm_command",
]

DEFAULT_MODEL = "Qwen/Qwen3-8B"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_MODEL_LEN = 16384
TOOL_CALL_PARSER = "hermes"

#: The fix named whenever ``vllm`` cannot be found.
INSTALL_HINT = (
    "install vLLM in its own environment (python -m venv ~/vllm && ~/vllm/bin/pip install "
    "vllm; needs an NVIDIA GPU), then put ~/vllm/bin on PATH or pass --vllm ~/vllm/bin/vllm; "
    "quantorch never installs vLLM into its own environment"
)

#: Models whose weights are not licensed for commercial use: (name fragment, note).
_RESTRICTED = (
    ("nemotron-orchestrator",
     ("nvidia/Nemotron-Orchestrator-8B is under NVIDIA's licence for research and development "
      "only (non-commercial): do not trade real money with it; Qwen/Qwen3-8B (Apache-2.0) is "
      "the default")),
)

#: ``--max-lora-rank`` values vLLM accepts; its default is 16.
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_VLLM_DEFAULT_LORA_RANK = 16

# a LoRA name is the model name requests carry: no spaces, no '=' (vLLM splits on it)
_LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


@dataclass(frozen=True)
class LoraAdapter:
    """A LoRA adapter served on top of the base model; requests select it by ``name``."""

    name: str
    path: str

    @property
    def module(self) -> str:
        """The ``name=path`` form ``--lora-modules`` takes."""
        return f"{self.name}={self.path}"


def parse_lora(text: str) -> LoraAdapter:
    """``NAME=PATH`` (as typed after ``--lora``) as a :class:`LoraAdapter`; ``~`` is expanded."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise UserInputError(
            f"bad --lora '{text}': use NAME=PATH, e.g. --lora trader=./checkpoints/lora "
            "(NAME is the model name the orchestrator asks for)"
        )
    if not _LORA_NAME.match(name):
        raise UserInputError(
            f"bad --lora name '{name}': use letters, digits, '.', '_', '-' or '/' "
            "(it becomes the model name in the config)"
        )
    if "=" in path:
        raise UserInputError(f"bad --lora path '{path}': vLLM cannot take a path with '=' in it; "
                             "move or link the adapter to a path without one")
    return LoraAdapter(name=name, path=os.path.expanduser(path))


def lora_rank(path: str | Path) -> int | None:
    """The rank ``r`` in a local adapter's ``adapter_config.json`` (PEFT), None when unknown."""
    config = Path(path) / "adapter_config.json"
    try:
        rank = json.loads(config.read_text(encoding="utf-8")).get("r")
    except (OSError, ValueError, AttributeError):
        return None
    return rank if isinstance(rank, int) and rank > 0 else None


def vllm_command(
    model: str = DEFAULT_MODEL,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_model_len: int | None = DEFAULT_MAX_MODEL_LEN,
    served_model_name: str | None = None,
    loras: Sequence[LoraAdapter] = (),
    max_lora_rank: int | None = None,
    gpu_memory_utilization: float | None = None,
    executable: str = "vllm",
) -> list[str]:
    """The ``vllm serve`` argv for quantorch's LLM orchestrator.

    Parameters
    ----------
    model
        Hugging Face id or local checkpoint folder of the base model.
    host, port
        Where the OpenAI-compatible API listens.
    max_model_len
        Context length in tokens (prompt + reply); None leaves vLLM the model's own maximum,
        which reserves far more GPU memory for the KV cache than a decision needs.
    served_model_name
        The name requests use (``llm.model``); None: the ``model`` string itself.
    loras
        Adapters served beside the base model (``--enable-lora --lora-modules name=path``).
    max_lora_rank
        Largest adapter rank, when above vLLM's default of 16 (rounded up to a rank vLLM
        accepts).
    gpu_memory_utilization
        Fraction of GPU memory vLLM may take (its default is 0.9).
    executable
        The ``vllm`` program (a name on PATH or a path).

    Raises
    ------
    UserInputError
        A value vLLM would refuse, said in quantorch's terms.
    """
    if not model.strip():
        raise UserInputError("--model is empty: pass a Hugging Face id (Qwen/Qwen3-8B) or a "
                             "local checkpoint folder")
    if not 1 <= port <= 65535:
        raise UserInputError(f"bad --port {port}: use a TCP port from 1 to 65535")
    if max_model_len is not None and max_model_len < 256:
        raise UserInputError(f"bad --max-model-len {max_model_len}: a decision's prompt alone "
                             "needs a few thousand tokens; use 16384, or 0 for the model's own")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise UserInputError(f"bad --gpu-memory-utilization {gpu_memory_utilization}: use a "
                             "fraction above 0 and at most 1, e.g. 0.9")
    names = [lora.name for lora in loras]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserInputError(f"--lora name {repeated[0]} is given twice: give each adapter its "
                             "own name")
    base_name = served_model_name or model
    if base_name in names:
        raise UserInputError(f"--lora name {base_name} is also the base model's name: name the "
                             "adapter differently (requests pick the model by name)")
    argv = [executable, "serve", model,
            "--enable-auto-tool-choice", "--tool-call-parser", TOOL_CALL_PARSER,
            "--enable-prefix-caching",
            "--host", host, "--port", str(port)]
    if max_model_len is not None:
        argv += ["--max-model-len", str(max_model_len)]
    if served_model_name is not None:
        argv += ["--served-model-name", served_model_name]
    if gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    if loras:
        argv += ["--enable-lora"]
        if max_lora_rank is not None and max_lora_rank > _VLLM_DEFAULT_LORA_RANK:
            fitting = [r for r in _LORA_RANKS if r >= max_lora_rank]
            if not fitting:
                raise UserInputError(f"a LoRA adapter of rank {max_lora_rank} is above the "
                                     f"{_LORA_RANKS[-1]} vLLM can serve: train a smaller rank")
            argv += ["--max-lora-rank", str(fitting[0])]
        # the list comes last: --lora-modules takes every value up to the next flag
        argv += ["--lora-modules", *(lora.module for lora in loras)]
    return argv


def base_url(host: str, port: int) -> str:
    """The ``/v1`` address a client on this machine uses for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):  # bound to every interface: this machine reaches it locally
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal in a URL
    return f"http://{host}:{port}/v1"


def llm_settings(
    model: str = DEFAULT_MODEL,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    served_model_name: str | None = None,
    loras: Sequence[LoraAdapter] = (),
) -> dict[str, Any]:
    """The ``llm:`` config section for the server :func:`vllm_command` starts.

    ``model`` is the name requests must carry: the first LoRA adapter's when adapters are
    served (that is what one serves them for), else the served name.
    """
    name = loras[0].name if loras else (served_model_name or model)
    return {"base_url": base_url(host, port), "model": name}


def config_snippet(settings: dict[str, Any]) -> str:
    """``settings`` as the YAML block a trader pastes into their config file."""
    import yaml

    return yaml.safe_dump({"llm": settings}, sort_keys=False, default_flow_style=False)


def licence_note(model: str) -> str | None:
    """A warning when ``model`` is a checkpoint whose licence forbids commercial use."""
    lowered = model.lower()
    for fragment, note in _RESTRICTED:
        if fragment in lowered:
            return note
    return None


def find_vllm(explicit: str | Path | None = None) -> str:
    """The ``vllm`` executable: ``explicit`` (a file, or a virtual environment folder) or
    ``vllm`` on PATH.

    Raises
    ------
    UserInputError
        Not found or not executable; the message names the fix.
    """
    if explicit is None:
        found = shutil.which("vllm")
        if found is None:
            raise UserInputError(f"vllm is not on PATH: {INSTALL_HINT}")
        return found
    path = Path(explicit).expanduser()
    if path.is_dir():  # a virtual environment (or its bin folder) was given
        for candidate in (path / "bin" / "vllm", path / "vllm"):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise UserInputError(f"--vllm {explicit}: no vllm executable in that folder; "
                             f"{INSTALL_HINT}")
    if not path.is_file():
        found = shutil.which(str(explicit))  # a bare name such as vllm-0.9
        if found is None:
            raise UserInputError(f"--vllm {explicit}: no such file; {INSTALL_HINT}")
        return found
    if not os.access(path, os.X_OK):
        raise UserInputError(f"--vllm {explicit} is not executable (chmod +x it, or pass the "
                             "vllm of the environment vLLM was installed in)")
    return str(path)


def run_server(argv: Sequence[str], *, stop_grace_s: float = 30.0) -> int:
    """Run ``argv`` (the vLLM server) in the foreground until it exits; its exit status.

    On Ctrl-C or SIGTERM the server is asked to stop (SIGTERM: vLLM shuts down its engine
    processes), then killed after ``stop_grace_s``; the interrupt is re-raised.
    """
    try:
        process = subprocess.Popen(list(argv))
    except OSError as exc:
        raise UserInputError(f"could not start {argv[0]}: {exc.strerror or exc}; "
                             f"{INSTALL_HINT}") from exc
    try:
        code = process.wait()
    except BaseException:
        _stop(process, stop_grace_s)
        raise
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    if process.poll() is not None:
        return
    try:
        # SIGTERM, not a second SIGINT: uvicorn takes a second SIGINT as "exit now", skipping
        # the engine's shutdown (the terminal already sent the first one on Ctrl-C)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: do not leave it running
        process.kill()
        process.wait()
        raise

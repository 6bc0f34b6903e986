"""``quantorch serve llm``: the vLLM command that serves the LLM orchestrator's model.

Thin: the command line is built by :func:`quantorch.llm.serving.vllm_command`; this module
parses the options, prints the command and the ``llm:`` config section (or ``--json``), and
with ``--run`` starts the server. vLLM is never imported: it runs from its own environment.
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated, Optional

import typer

from quantorch.cli._common import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    DebugOpt,
    JsonOpt,
    Terminated,
    err,
    error_line,
    guard,
    new_app,
    out,
)
from quantorch.errors import UserInputError

__all__ = ["serve_app"]

serve_app = new_app(
    "Serve an open-weights model for `--orchestrator llm` on your own GPU with vLLM (a fast "
    "inference server with an OpenAI-compatible API). vLLM runs from its own environment, "
    "never quantorch's. Start with `quantorch serve llm`: it prints the command and the llm: "
    "config section."
)


@serve_app.command("llm")
def llm(
    model: Annotated[str, typer.Option(
        "--model", metavar="ID|PATH",
        help="Hugging Face model id or a local checkpoint folder. Qwen/Qwen3-8B is the default "
             "(Apache-2.0: commercial use allowed). nvidia/Nemotron-Orchestrator-8B is opt-in "
             "and under NVIDIA's research-only licence: not for real-money trading.")
    ] = "Qwen/Qwen3-8B",
    port: Annotated[int, typer.Option("--port", metavar="N", min=1, max=65535,
                                      help="Port of the API.")] = 8000,
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDR",
        help="Address to listen on; 0.0.0.0 lets other machines reach it (put it behind a "
             "firewall: a local vLLM has no key).")] = "127.0.0.1",
    max_model_len: Annotated[int, typer.Option(
        "--max-model-len", metavar="TOKENS", min=0,
        help="Context length per request (prompt + reply). A decision needs a few thousand "
             "tokens; a smaller window leaves more GPU memory for batching. 0: the model's own "
             "maximum.")] = 16384,
    lora: Annotated[Optional[list[str]], typer.Option(
        "--lora", metavar="NAME=PATH", show_default=False,
        help="Also serve a LoRA adapter (a PEFT folder, e.g. fine-tuned with TRL) under NAME; "
             "repeat for several. The printed config then asks for the first one.")] = None,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", metavar="NAME", show_default=False,
        help="Name the base model answers to (the config's llm.model) [default: the --model "
             "string].")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(
        "--gpu-memory-utilization", metavar="FRACTION", min=0.01, max=1.0, show_default=False,
        help="Share of the GPU's memory vLLM may take [default: vLLM's, 0.9]; lower it when "
             "the GPU is shared.")] = None,
    vllm: Annotated[Optional[str], typer.Option(
        "--vllm", metavar="PATH", show_default=False,
        help="The vllm executable, or the virtual environment it is installed in [default: "
             "vllm on PATH].")] = None,
    run: Annotated[bool, typer.Option(
        "--run", help="Start the server now, in the foreground (Ctrl-C stops it). Needs an "
                      "NVIDIA GPU and vLLM installed in its own environment.")] = False,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Print (or, with --run, start) the vLLM server command for the LLM orchestrator, with the
    llm: section to paste into your config.

    vLLM serves the model on a GPU with an OpenAI-compatible API; quantorch's LLM orchestrator
    talks to it over HTTP, so vLLM lives in its own virtual environment or container
    (vllm/vllm-openai) and never in quantorch's: its pinned numba and transformers clash with
    quantorch's. Install it once: python -m venv ~/vllm && ~/vllm/bin/pip install vllm.

    The command turns on tool calling with the hermes parser (what Qwen3-8B writes) and prefix
    caching (every decision starts with the same instructions and tool list). See docs/llm.md.

    Examples: quantorch serve llm; quantorch serve llm --run --vllm ~/vllm; quantorch serve
    llm --lora trader=checkpoints/lora --run
    """
    with guard(debug):
        from quantorch.llm import serving

        if run and json_output:
            raise UserInputError("--json describes the command without starting it; --run "
                                 "starts it (its log is not JSON): pass one or the other")
        adapters = [serving.parse_lora(text) for text in lora or ()]
        ranks = [r for r in (serving.lora_rank(a.path) for a in adapters) if r is not None]
        executable = serving.find_vllm(vllm) if run else (vllm or "vllm")
        argv = serving.vllm_command(
            model, host=host, port=port, max_model_len=max_model_len or None,
            served_model_name=served_model_name, loras=adapters,
            max_lora_rank=max(ranks) if ranks else None,
            gpu_memory_utilization=gpu_memory_utilization, executable=executable,
        )
        settings = serving.llm_settings(model, host=host, port=port,
                                        served_model_name=served_model_name, loras=adapters)
        snippet = serving.config_snippet(settings)
        note = serving.licence_note(model)
        if json_output:
            sys.stdout.write(json.dumps({
                "command": argv, "command_line": shlex.join(argv),
                "config": {"llm": settings}, "config_yaml": snippet, "licence_note": note,
            }) + "\n")
            return
        if note:
            error_line(note, prefix="note: ", style="yellow")
        if not run:
            out.print("# start the server (in vLLM's own environment, on a GPU machine):",
                      style="dim")
            out.print(shlex.join(argv), markup=False)
            out.print("# then add to your config file:", style="dim")
            out.print(snippet.rstrip("\n"), markup=False)
            return
        err.print(f"starting: {shlex.join(argv)}", markup=False)
        err.print(f"when it is up (GET {settings['base_url']}/models), put this in your config:",
                  markup=False)
        err.print(snippet.rstrip("\n"), markup=False)
        try:
            code = serving.run_server(argv)
        except KeyboardInterrupt as exc:
            error_line("the vLLM server was stopped", prefix="", style="")
            raise typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated)
                             else EXIT_INTERRUPTED) from None
        if code != 0:
            error_line(f"vllm exited with status {code}: see its messages above (a missing "
                       "GPU, a model that does not fit its memory, or a port in use are the "
                       "usual causes)")
            raise typer.Exit(code)

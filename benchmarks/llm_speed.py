"""LLM orchestrator speed against a real OpenAI-compatible server on loopback.

Usage::

    python benchmarks/llm_speed.py [--decisions 32] [--concurrency 1 8]
    python benchmarks/llm_speed.py --base-url URL --model NAME
    python benchmarks/llm_speed.py --scripted-latency-ms 200

Without ``--base-url`` it serves the tiny random ``Qwen3ForCausalLM`` of the test suite
(``tests/support/tiny_llm.py``: trained for a few hundred steps on conversations rendered with
the orchestrator's own prompts, cached after the first build) with ``transformers serve`` on
127.0.0.1, on CPU. With ``--base-url`` it measures any server (e.g. ``vllm serve`` on a GPU:
see ``benchmarks/llm_gpu.sh`` for the whole backtest there).

What is timed: the llm orchestrator's conversations for ``--decisions`` (ticker, session)
decisions of one session (``LLMOrchestrator.plan_session``: the prompts, every request, the
client-side validation, the tool results going back), with the transcript cache off and the
tool calls answered from fixed results (the tools' own cost is not the figure here). The same
decisions run once per ``--concurrency`` (the client's ``max_concurrency``: requests in flight
at once); the ratio of decisions/s at the highest to the lowest is the batching gain. Also
printed: tokens and cost per decision (``llm:`` default prices), fallbacks.

Target on one H100/H200 with vLLM batching and prefix caching: >= 50 decisions/s (no GPU run
exists yet; on this CPU machine the loopback figures are what there is). ``transformers serve``
generates one request at a time on CPU, so the tiny model shows no batching gain;
``--scripted-latency-ms`` shows what the client keeps in flight against a server that answers
requests in parallel (as vLLM does).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_GPU_DECISIONS_PER_S = 50.0


def _inputs(n: int, seed: int = 1):
    """``n`` decisions and their technical results, shaped like the real ones (the tiny model
    was warmed up on such conversations; the sample's 20 tickers)."""
    import random

    from quantorch.config import load_config
    from quantorch.orchestrator.profiles import load_profile
    from tests.support.llm_examples import sample_decision

    rng = random.Random(seed)
    tickers = load_config().universe
    profile = load_profile("neutral")
    return [sample_decision(rng, tickers[i % len(tickers)], profile) for i in range(n)], rng


def measure(base_url: str, model: str, decisions: int, concurrency: int) -> dict:
    import torch

    from quantorch.config import LLMConfig
    from quantorch.llm.client import OpenAIChatModel
    from quantorch.llm.orchestrator import LLMOrchestrator, LLMSettingsView
    from quantorch.llm.settings import LLMSettings
    from quantorch.orchestrator.profiles import load_profile
    from quantorch.orchestrator.slots import resolve_slots
    from quantorch.toolkit.registry import get_tool
    from tests.support.llm_examples import SLOT_NAMES

    torch.set_num_threads(1)
    config = LLMConfig(base_url=base_url, model=model, max_concurrency=concurrency,
                       timeout_s=600, max_tokens=96)
    chat = OpenAIChatModel(LLMSettings.from_config(config))
    slots = resolve_slots(list(SLOT_NAMES))
    specs = {s.tool: get_tool(s.tool).spec for s in slots}
    orchestrator = LLMOrchestrator(chat, LLMSettingsView.from_config(config), specs, cache=None)
    from tests.support.llm_examples import technical_result

    items, rng = _inputs(decisions)
    profile = load_profile("neutral")
    started = time.perf_counter()
    plans = orchestrator.plan_session(items, profile, slots,
                                      lambda j, k: technical_result(rng, items[j], slots[k]))
    seconds = time.perf_counter() - started
    tokens = sum(p.tokens for p in plans)
    return {
        "concurrency": concurrency,
        "decisions": len(plans),
        "seconds": seconds,
        "decisions_per_s": len(plans) / seconds,
        "requests": sum(p.rounds for p in plans),
        "tokens_per_decision": tokens / len(plans),
        "tokens_per_s": tokens / seconds,
        "cost_per_decision_usd": sum(p.cost_usd for p in plans) / len(plans),
        "fallbacks": sum(p.fallback is not None for p in plans),
    }


@contextlib.contextmanager
def _tiny_server(extra_args=()):
    from tests.support.llm_examples import orchestrator_examples
    from tests.support.tiny_llm import missing_requirements, serve, tiny_model_dir

    missing = missing_requirements()
    if missing:
        raise SystemExit(f"needs {', '.join(missing)} (pip install -e '.[dev]')")
    from quantorch.config import load_config

    started = time.perf_counter()
    model_dir = tiny_model_dir(orchestrator_examples(load_config().universe))
    print(f"tiny Qwen3 model ready in {time.perf_counter() - started:.1f} s ({model_dir})")
    with serve(model_dir, extra_args=extra_args) as server:
        print(f"transformers serve up in {server.startup_s:.1f} s at {server.base_url}")
        yield server.base_url, server.model


@contextlib.contextmanager
def _scripted_server(latency_ms: float):
    """The test suite's scripted OpenAI server (real HTTP, a thread per request) answering
    after ``latency_ms``: the client's own ceiling, and whether it keeps requests in flight."""
    from tests.support.scripted_llm import call, scripted_server, stock_of, tool_results

    def policy(body):
        time.sleep(latency_ms / 1000)
        ticker = stock_of(body)
        if ticker is None:
            return {"content": "pong"}
        if not tool_results(body):
            return {"tool_calls": [call("technical", {"ticker": ticker, "provider": "basic"})]}
        return {"tool_calls": [call("submit_decision", {"position": "half_long",
                                                        "rationale": "mild uptrend"})]}

    with scripted_server(policy) as server:
        print(f"scripted server at {server.base_url}, {latency_ms:g} ms per reply")
        yield server.base_url, server.model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=32)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--base-url")
    parser.add_argument("--model")
    parser.add_argument("--scripted-latency-ms", type=float, default=None,
                        help="measure against a scripted server answering after this delay "
                             "(the client's ceiling) instead of the tiny model")
    parser.add_argument("--continuous-batching", action="store_true",
                        help="serve the tiny model with transformers' continuous batching")
    args = parser.parse_args()
    extra = ("--continuous-batching",) if args.continuous_batching else ()
    if args.base_url:
        server = contextlib.nullcontext((args.base_url, args.model))
    elif args.scripted_latency_ms is not None:
        server = _scripted_server(args.scripted_latency_ms)
    else:
        server = _tiny_server(extra)
    with server as (base_url, model):
        measure(base_url, model, 2, 2)  # warm: connections, the server's first generation
        results = [measure(base_url, model, args.decisions, c) for c in args.concurrency]
    print(f"\n{'in flight':>9} {'decisions':>9} {'seconds':>8} {'decisions/s':>11} "
          f"{'tokens/dec':>10} {'tokens/s':>9} {'$/decision':>11} {'fallbacks':>9}")
    for r in results:
        print(f"{r['concurrency']:>9} {r['decisions']:>9} {r['seconds']:>8.2f} "
              f"{r['decisions_per_s']:>11.2f} {r['tokens_per_decision']:>10.0f} "
              f"{r['tokens_per_s']:>9.0f} {r['cost_per_decision_usd']:>11.7f} "
              f"{r['fallbacks']:>9}")
    low, high = results[0], results[-1]
    print(f"\nbatching gain (decisions/s at {high['concurrency']} in flight / at "
          f"{low['concurrency']}): {high['decisions_per_s'] / low['decisions_per_s']:.2f}x")
    print(f"GPU target (one H100/H200, vLLM): >= {TARGET_GPU_DECISIONS_PER_S:.0f} decisions/s; "
          "measure it with benchmarks/llm_gpu.sh")


if __name__ == "__main__":
    main()

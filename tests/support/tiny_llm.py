"""A tiny random Qwen3 chat model behind a real ``transformers serve``, for end-to-end LLM tests.

No weights are downloaded: :func:`build_tiny_model` trains a byte-level BPE tokenizer on the
example conversations, wraps it with the original Qwen3 chat template that ships inside TRL
(``trl/chat_templates/qwen3.jinja``), and trains a randomly initialised 2-layer
``Qwen3ForCausalLM`` (hidden 64, about 0.2M parameters, sliding-window attention of 256 tokens)
for 2000 steps on the assistant turns, on one CPU thread (about 2.5 minutes; once, then cached).
It learns the *format* of tool calling, not finance: after the user message it calls
``technical`` (provider ``basic``) for the ticker the user named; after a tool result it calls
``submit_decision`` with ``half_long`` (``flat`` when the example's tool result was an error) and
a short rationale. Greedy decoding is deterministic. Because every layer sees only the last 256
tokens, the model answers the same behind a tool table of any length (the real registry's
schemas included), and the ticker must be named within ~200 tokens of the end of the prompt.

:func:`tiny_model_dir` caches the built model under ``$QUANTORCH_TEST_CACHE/tiny-llm/<hash>``
(default ``~/.cache/quantorch-tests``), keyed by the examples, the build arguments, the recipe's
source and the library versions, so later test sessions do not retrain.

:func:`serve` runs ``transformers serve <model_dir>`` on 127.0.0.1 (a free port) as a subprocess
and yields a :class:`TinyLLMServer` with ``base_url`` (``http://127.0.0.1:PORT/v1``) and ``model``
(the name requests must carry: the model directory's path, since the server is pinned to it). The
server parses ``<tool_call>{json}</tool_call>`` into OpenAI ``tool_calls`` because the model's
``model_type`` is ``qwen3`` (transformers' built-in Qwen response template).

Fixtures (session-wide: one server is shared by every module that imports them)::

    from tests.support.tiny_llm import tiny_llm_server  # noqa: F401

    @pytest.mark.slow
    def test_something(tiny_llm_server):  # noqa: F811
        client = MyClient(base_url=tiny_llm_server.base_url, model=tiny_llm_server.model)

or, without the lint noise, a module's own fixture around :func:`shared_server`. They skip (with
the reason) when ``transformers[serving]``, ``tokenizers`` or ``trl`` is not installed; importing
this module needs none of them.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.metadata
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "CACHE_ENV",
    "POSITIONS",
    "TinyLLMServer",
    "build_tiny_model",
    "default_examples",
    "missing_requirements",
    "serve",
    "shared_server",
    "submit_decision_tool",
    "tiny_llm_dir",
    "tiny_llm_server",
    "tiny_model_dir",
]

#: Overrides the cache folder (``<it>/tiny-llm/<hash>``); default ``~/.cache/quantorch-tests``.
CACHE_ENV = "QUANTORCH_TEST_CACHE"

#: Bump when the recipe changes in a way the hash would not see.
RECIPE_VERSION = "1"

POSITIONS = ("short", "half_short", "flat", "half_long", "long")

#: Qwen3's control tokens: special (dropped by ``skip_special_tokens``) ...
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: ... and its plain added tokens (kept in decoded text, as in the real Qwen3 tokenizer).
ADDED_TOKENS = (
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
)

_REQUIRED = ("torch", "tokenizers", "transformers", "trl", "fastapi", "uvicorn", "httpx")

DEFAULT_STEPS = 2000
#: Attention window of every layer (tokens).
WINDOW = 256


def missing_requirements() -> list[str]:
    """The packages this module needs that are not importable (empty when all are)."""
    import importlib.util

    return [name for name in _REQUIRED if importlib.util.find_spec(name) is None]


def _skip_unless_available() -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip(
            "the tiny-LLM server needs " + ", ".join(missing)
            + ' (pip install "transformers[serving]>=5" "trl>=1.13")'
        )


# ------------------------------------------------------------------------------------------------
# examples
# ------------------------------------------------------------------------------------------------

#: The analysis tools of the default tables and their providers (as quantorch's registry has them).
ANALYSIS_PROVIDERS: dict[str, tuple[str, ...]] = {
    "technical": ("basic", "full"),
    "risk": ("fast", "full"),
    "fundamental": ("factor", "file", "sec"),
    "sentiment": ("lexicon", "embed", "llm"),
}
#: Decoy tools some default tables also carry, so the model does not rely on a fixed table.
_DECOY_PROVIDERS: dict[str, tuple[str, ...]] = {
    "macro": ("rates", "curve"),
    "options": ("iv", "skew"),
    "flows": ("etf", "insider"),
}

TICKERS = (
    "AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY", "MRK", "MSFT",
    "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM", "SP500", "NVDA", "AMZN", "GOOGL", "META",
    "TSLA", "INTC", "IBM", "DIS", "SPY", "QQQ",
)

_WORDS = tuple((  # noqa: SIM905
    "price volume trend momentum reversion volatility drawdown beta correlation session close "
    "open high low return returns rolling window moving average slope band z-score index market "
    "benchmark factor quality value size growth leverage ratio filings quarterly annual earnings "
    "cash flow assets equity news posts score share positive negative items lexicon embedding "
    "confidence forecast tail risk historical realised exponential weighted regression residual "
    "signal strength decision point-in-time offline provider cost latency call indicator sector"
).split())
_UNITS = ("fraction", "ratio", "z-score", "days", "beta", "score in [-1, 1]", "log count")


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(low, high)))


def _description(rng: random.Random, outputs: Sequence[str]) -> str:
    text = " ".join(_words(rng, 3, 9).capitalize() + "." for _ in range(rng.randint(1, 2)))
    returns = "; ".join(f"{name} ({rng.choice(_UNITS)}): {_words(rng, 2, 5)}" for name in outputs)
    return f"{text} Returns: {returns}"


def _outputs(rng: random.Random, tool: str) -> list[str]:
    return [f"{rng.choice(_WORDS).replace('-', '_')}{i}" for i in range(rng.randint(1, 5))]


def analysis_tool(name: str, providers: Sequence[str], rng: random.Random | None = None) -> dict:
    """An OpenAI ``tools`` entry shaped like quantorch's ``ToolSpec.openai_tool()``."""
    rng = rng or random.Random(name)
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": _description(rng, _outputs(rng, name)),
            "parameters": {
                "type": "object",
                "properties": {
                    "ticker": {"type": "string", "description": "stock ticker, e.g. AAPL"},
                    "provider": {
                        "type": "string",
                        "enum": list(providers),
                        "description": "; ".join(
                            f"{p}: {_words(rng, 2, 5)}"
                            f" (~${rng.choice((0.0005, 0.001, 0.002, 0.005)):.4f}/call,"
                            f" ~{rng.choice((3, 5, 12, 40, 60))} ms)"
                            for p in providers
                        ),
                    },
                },
                "required": ["ticker"],
                "additionalProperties": False,
            },
        },
    }


def submit_decision_tool(positions: Sequence[str] = POSITIONS) -> dict:
    """The ``submit_decision`` entry: ``position`` (enum) and ``rationale`` (string)."""
    return {
        "type": "function",
        "function": {
            "name": "submit_decision",
            "description": "Submit the target position for this ticker and session. Call it exactly "
                           "once, after the analysis calls you want.",
            "parameters": {
                "type": "object",
                "properties": {
                    "position": {"type": "string", "enum": list(positions),
                                 "description": "target position as a fraction of the slot"},
                    "rationale": {"type": "string", "description": "one short sentence"},
                },
                "required": ["position", "rationale"],
                "additionalProperties": False,
            },
        },
    }


def _tool_table(rng: random.Random) -> list[dict]:
    names = [n for n in ANALYSIS_PROVIDERS if n != "technical" and rng.random() < 0.7]
    names += [n for n in _DECOY_PROVIDERS if rng.random() < 0.2]
    names.insert(rng.randint(0, len(names)), "technical")
    table = [
        analysis_tool(n, ANALYSIS_PROVIDERS.get(n) or _DECOY_PROVIDERS[n], rng) for n in names
    ]
    at = len(table) if rng.random() < 0.8 else rng.randint(0, len(table))
    table.insert(at, submit_decision_tool())
    return table


_SYSTEM_PROMPTS = (
    ("You are quantorch's trading orchestrator. For one ticker and one session, call the analysis "
     "tools you need (each call costs money), then call submit_decision exactly once."),
    ("You decide a daily position for a single stock. Use the tools to gather evidence, then "
     "submit your decision with submit_decision. Positions: short, half_short, flat, half_long, "
     "long."),
    "Trading assistant. Budget per decision is limited. Call tools, then submit_decision.",
    "You are a careful portfolio manager. Reply only with tool calls.",
)


def _user_prompt(rng: random.Random, ticker: str, day: str) -> str:
    position = rng.choice(POSITIONS)
    budget = rng.choice(("0.01", "0.02", "0.05", "0.10"))
    templates = (
        f"Ticker: {ticker}\nSession: {day}\nCurrent position: {position}\nBudget: ${budget}",
        f"Decide the position for {ticker} at the close of {day}.",
        f"{ticker} {day}: what position should we hold? Current position {position}.",
        json.dumps({"ticker": ticker, "asof": day, "position": position, "budget_usd": budget}),
        f"Session {day}. Stock {ticker}. You hold {position}. Spend at most ${budget} on tools.",
        f"Please analyse {ticker} as of {day} and submit a decision.",
    )
    text = rng.choice(templates)
    if rng.random() < 0.3:  # some context after the ticker, as a real orchestrator may add
        extra = [f"{_words(rng, 1, 2)}: {round(rng.uniform(-1, 1), 3)}" for _ in range(rng.randint(1, 4))]
        text += "\n" + "\n".join(extra)
    return text


def _tool_result(rng: random.Random, ticker: str, day: str, failed: bool) -> str:
    if failed:
        return json.dumps({
            "tool": "technical", "provider": "basic", "ticker": ticker, "asof": day,
            "error": rng.choice(("no price history before the decision", "provider timed out",
                                 "not enough sessions for the indicators")),
            "error_kind": rng.choice(("temporary", "input", "tool")),
        })
    names = ("close_vs_sma20", "close_vs_sma50", "rsi14", "roc10", "bollinger_pctb")
    features = {n: round(rng.gauss(0, 0.1), 4) for n in names[: rng.randint(2, 5)]}
    result = {"tool": "technical", "provider": "basic", "ticker": ticker, "asof": day,
              "features": features}
    if rng.random() < 0.5:
        result["cost_usd"] = 0.0005
    return json.dumps(result)


def default_examples(n: int = 256, *, seed: int = 0,
                     tickers: Sequence[str] = TICKERS) -> list[dict[str, Any]]:
    """``n`` two-step tool-calling conversations in TRL's conversational SFT shape.

    Each is ``{"messages": [system, user, assistant(tool_calls: technical), tool,
    assistant(tool_calls: submit_decision)], "tools": [...]}`` with a random ticker and session,
    a random table of analysis tools (always with ``technical``; ``submit_decision`` mostly last)
    and a decision of ``half_long``, or ``flat`` when the tool result carries an ``"error"``.
    Tool-call ``arguments`` are dicts, as TRL and the chat template expect.
    """
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        ticker = rng.choice(tickers)
        day = f"20{rng.randint(10, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        failed = rng.random() < 0.25
        call_id = f"call_{i}_0"
        decision = {
            "position": "flat" if failed else "half_long",
            "rationale": (f"the analysis of {ticker} failed, so stay flat" if failed
                          else f"the technical picture of {ticker} looks mildly positive"),
        }
        examples.append({
            "messages": [
                {"role": "system", "content": rng.choice(_SYSTEM_PROMPTS)},
                {"role": "user", "content": _user_prompt(rng, ticker, day)},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": call_id, "type": "function",
                    "function": {"name": "technical",
                                 "arguments": {"ticker": ticker, "provider": "basic"}},
                }]},
                {"role": "tool", "tool_call_id": call_id, "name": "technical",
                 "content": _tool_result(rng, ticker, day, failed)},
                {"role": "assistant", "content": "", "tool_calls": [{
                    "id": f"call_{i}_1", "type": "function",
                    "function": {"name": "submit_decision", "arguments": decision},
                }]},
            ],
            "tools": _tool_table(rng),
        })
    return examples


# ------------------------------------------------------------------------------------------------
# building
# ------------------------------------------------------------------------------------------------

def qwen3_chat_template() -> str:
    """The original Qwen3 chat template, as TRL ships it (``trl/chat_templates/qwen3.jinja``)."""
    from importlib.resources import files

    return (files("trl") / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")


def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "tokenizers", "transformers", "trl"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    markers = (*SPECIAL_TOKENS, *ADDED_TOKENS)

    def strip(text: str) -> str:
        for marker in markers:
            text = text.replace(marker, "\n")
        return text

    tokenizer = Tokenizer(models.BPE())
    # Words, single digits, whitespace and punctuation runs are pieces of their own: a ticker is
    # the same token after a space, a quote or a newline, so the model can learn to copy it.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator((strip(t) for t in texts), trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])
    return tokenizer


def _wrap_tokenizer(tokenizer_object, chat_template: str):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def _render(tokenizer, messages, tools, *, add_generation_prompt: bool, thinking: bool) -> str:
    kwargs = {} if thinking else {"enable_thinking": False}
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt,
        **kwargs,
    )


def _turns(tokenizer, examples: Sequence[dict], rng: random.Random) -> list[tuple[str, str]]:
    """(prompt, completion) text pairs: one per assistant turn, with thinking left on (the
    template's default) or turned off (``enable_thinking=False``) at random.

    The prompt is what the server renders for a request that ends just before that assistant
    turn (``add_generation_prompt=True``); the completion is what the template renders for the
    turn (an empty ``<think>`` block when thinking is left on, then the ``<tool_call>`` blocks),
    up to and including ``<|im_end|>``, where generation stops.
    """
    pairs = []
    for example in examples:
        messages, tools = example["messages"], example.get("tools")
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            thinking = rng.random() < 0.5
            prompt = _render(tokenizer, messages[:index], tools,
                             add_generation_prompt=True, thinking=thinking)
            full = _render(tokenizer, messages[: index + 1], tools,
                           add_generation_prompt=False, thinking=thinking)
            if not full.startswith(prompt):
                raise ValueError("the chat template does not extend the prompt with the turn")
            completion = full[len(prompt):]
            completion = completion[: completion.rindex("<|im_end|>") + len("<|im_end|>")]
            pairs.append((prompt, completion))
    return pairs


def build_tiny_model(out_dir: str | Path, examples: Sequence[dict] | None = None, *,
                     steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 4,
                     learning_rate: float = 5e-3, vocab_size: int = 2048,
                     window: int = WINDOW, prompt_weight: float = 0.1, hidden_size: int = 64,
                     num_heads: int = 4, num_layers: int = 2, copy_weight: float = 5.0,
                     margin: int = 64) -> Path:
    """Train a tokenizer and a tiny ``Qwen3ForCausalLM`` on ``examples``; save both to ``out_dir``.

    ``examples`` default to :func:`default_examples`. Runs on one CPU thread (restored after).
    Writes ``tiny_llm.json`` beside the weights with the build's losses, seconds and versions.
    Copying the ticker from the prompt is what takes the steps: a few hundred already give
    well-formed calls (with a frequent ticker, not the user's), about 2000 the right ticker.
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    started = time.perf_counter()
    examples = list(examples) if examples is not None else default_examples()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    template = qwen3_chat_template()

    # The template renders the same text whatever the vocabulary: render with a throwaway
    # tokenizer, train the real one on the rendered conversations.
    rng = random.Random(seed)
    bootstrap = _wrap_tokenizer(_train_tokenizer(["a b"], 300), template)
    pairs = _turns(bootstrap, examples, rng)
    tokenizer = _wrap_tokenizer(
        _train_tokenizer([p + c for p, c in pairs], vocab_size), template
    )

    # Every layer attends to the last `window` positions only, so an answer depends on the last
    # few hundred tokens of a prompt: training on that tail of each prompt is cheap (RoPE is
    # relative, so positions do not matter), and the served model behaves the same behind a tool
    # table of any length. The tail is one window (what the last layer reads directly, e.g. the
    # ticker of the user message) and a margin (the left context of the earliest of those).
    context = window + margin
    sequences = []
    longest = 0
    for prompt, completion in pairs:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        longest = max(longest, len(prompt_ids) + len(completion_ids))
        sequences.append((prompt_ids[-context:], completion_ids))

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")

    def last_message_start(ids: list[int]) -> int:
        starts = [k for k, token in enumerate(ids) if token == im_start]
        return starts[-2] if len(starts) >= 2 else 0

    # Tokens in most completions (the JSON keys, the tool names) are not "copied".
    counts: dict[int, int] = {}
    for _, c in sequences:
        for token in set(c):
            counts[token] = counts.get(token, 0) + 1
    common = {token for token, n in counts.items() if n > len(sequences) // 10}
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=3 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=32768, tie_word_embeddings=True,
        use_sliding_window=True, sliding_window=window, max_window_layers=0,
        bos_token_id=endoftext, eos_token_id=im_end, pad_token_id=endoftext,
    )
    config.architectures = ["Qwen3ForCausalLM"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
        warmup = max(1, steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(1.0, (s + 1) / warmup) * max(0.05, 1 - s / max(1, steps)),
        )
        train_started = time.perf_counter()
        losses = []
        # Batches of similar lengths (little padding), in a fresh random order each epoch.
        by_length = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
        chunks = [by_length[i: i + batch_size] for i in range(0, len(by_length), batch_size)]
        order: list[list[int]] = []
        for _step in range(steps):
            if not order:
                order = list(chunks)
                rng.shuffle(order)
            batch = [sequences[i] for i in order.pop()]
            width = max(len(p) + len(c) for p, c in batch)
            ids = torch.full((len(batch), width), endoftext, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            weights = torch.zeros((len(batch), width))
            for row, (p, c) in enumerate(batch):
                ids[row, : len(p) + len(c)] = torch.tensor(p + c)
                mask[row, : len(p) + len(c)] = 1
                weights[row, 1: len(p)] = prompt_weight
                weights[row, len(p): len(p) + len(c)] = 1.0
                # A completion token also found in the last message (the ticker the user named)
                # weighs more: copying it is the one thing that is hard to learn.
                seen = set(p[last_message_start(p):])
                for k, token in enumerate(c):
                    if token in seen and token not in common:
                        weights[row, len(p) + k] = copy_weight
            hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
            # Next-token loss on the completions, and (lighter) on the prompts, which teaches the
            # model to copy what it has seen (a ticker) far sooner than the completions alone.
            keep = weights[:, 1:] > 0
            logits = model.lm_head(hidden[:, :-1][keep])
            token_loss = torch.nn.functional.cross_entropy(
                logits, ids[:, 1:][keep], reduction="none")
            w = weights[:, 1:][keep]
            loss = (token_loss * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        model.eval()
        train_s = time.perf_counter() - train_started
    finally:
        torch.set_num_threads(threads)

    model.generation_config = GenerationConfig(
        bos_token_id=endoftext, eos_token_id=[im_end, endoftext], pad_token_id=endoftext,
        do_sample=False, max_new_tokens=256,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "tiny_llm.json").write_text(json.dumps({
        "recipe": RECIPE_VERSION, "steps": steps, "seed": seed, "examples": len(examples),
        "window": window, "margin": margin, "prompt_weight": prompt_weight, "copy_weight": copy_weight, "learning_rate": learning_rate, "batch_size": batch_size,
        "sequences": len(sequences), "longest_sequence": longest,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer), "first_loss": losses[0] if losses else None,
        "last_loss": sum(losses[-10:]) / max(1, len(losses[-10:])) if losses else None,
        "train_seconds": round(train_s, 2),
        "seconds": round(time.perf_counter() - started, 2), "versions": _versions(),
    }, indent=2))
    return out_dir


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV, "").strip()
    base = Path(configured) if configured else Path.home() / ".cache" / "quantorch-tests"
    return base / "tiny-llm"


def _recipe_digest() -> str:
    """What the build does: its functions' code (docstrings and comments aside) and defaults."""
    import ast
    import inspect

    parts = []
    for function in (build_tiny_model, _train_tokenizer, _wrap_tokenizer, _turns, _render):
        tree = ast.parse(inspect.getsource(function))
        body = tree.body[0].body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            del body[0]
        parts.append(ast.dump(tree))
    parts.append(repr(sorted(
        (name, param.default) for name, param in inspect.signature(build_tiny_model).parameters.items()
    )))
    parts += [repr(SPECIAL_TOKENS), repr(ADDED_TOKENS)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _key(examples: Sequence[dict], steps: int, seed: int, build_kwargs: dict) -> str:
    payload = json.dumps({
        "examples": examples, "steps": steps, "seed": seed, "kwargs": build_kwargs,
        "recipe": RECIPE_VERSION, "versions": _versions(), "template": qwen3_chat_template(),
        "builder": _recipe_digest(),
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


_build_lock = threading.Lock()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two test runs building the same model wait)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename still keeps the cache whole
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tiny_model_dir(examples: Sequence[dict] | None = None, *, steps: int = DEFAULT_STEPS,
                   seed: int = 0, **build_kwargs: Any) -> Path:
    """The model :func:`build_tiny_model` builds for ``examples`` (default
    :func:`default_examples`), from the cache or built into it first (atomically: a half-built
    folder is never seen). ``build_kwargs`` go to :func:`build_tiny_model` (and into the key)."""
    examples = list(examples) if examples is not None else default_examples()
    final = cache_root() / _key(examples, steps, seed, build_kwargs)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock, _file_lock(final.parent / f".{final.name}.lock"):
        if (final / "tiny_llm.json").is_file():
            return final
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            build_tiny_model(scratch, examples, steps=steps, seed=seed, **build_kwargs)
            os.replace(scratch, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------
# serving
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TinyLLMServer:
    """A running ``transformers serve``: point an OpenAI client at ``base_url`` with ``model``."""

    base_url: str
    model: str
    model_dir: Path
    port: int
    log_path: Path
    startup_s: float
    process: subprocess.Popen = field(repr=False, compare=False)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """The environment the server runs with: offline, one thread, no update check."""
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1",
    })
    return env


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)  # the server runs in its own session: its group is its own
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def serve(model_dir: str | Path, *, port: int | None = None, timeout_s: float = 180.0,
          extra_args: Sequence[str] = (), log_path: str | Path | None = None,
          ) -> Iterator[TinyLLMServer]:
    """Run ``transformers serve <model_dir>`` on 127.0.0.1 until the block exits.

    The model is preloaded (pinned: ``model`` must be ``str(model_dir)``, or omitted), so the
    server answers ``/v1/models`` only once it can generate. Raises ``RuntimeError`` with the
    log's last lines when the process dies or does not answer within ``timeout_s``. On exit the
    whole process group is terminated (SIGTERM, then SIGKILL).
    """
    import httpx

    model_dir = Path(model_dir).resolve()
    model = str(model_dir)
    own_log = log_path is None
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path = Path(log_path)
    port = port or _free_port()
    command = [
        sys.executable, "-m", "transformers.cli.transformers", "serve", model,
        "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32",
        "--log-level", "info", *extra_args,
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=server_env(), start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = started + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited with {process.returncode} before answering "
                    f"(command: {' '.join(command)}); last lines of {log_path}:\n{_tail(log_path)}"
                )
            try:
                answer = httpx.get(f"{base_url}/models", timeout=2.0)
                if answer.status_code == 200 and any(
                    m.get("id") == model for m in answer.json().get("data", [])
                ):
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() > deadline:
                raise RuntimeError(
                    f"transformers serve did not answer {base_url}/models within {timeout_s:.0f}s; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.25)
        yield TinyLLMServer(
            base_url=base_url, model=model, model_dir=model_dir, port=port, log_path=log_path,
            startup_s=round(time.perf_counter() - started, 2), process=process,
        )
    except BaseException:
        own_log = False  # keep the log of a failure (its path is in the message)
        raise
    finally:
        _stop(process)
        if own_log:
            log_path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------

class _Shared:
    """One server for the whole test session, however many modules import the fixture (each
    import is its own session-scoped fixture to pytest): reference-counted, stopped by the last
    fixture's teardown, and at interpreter exit at the latest."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.stack: contextlib.ExitStack | None = None
        self.server: TinyLLMServer | None = None

    def acquire(self) -> TinyLLMServer:
        with self.lock:
            if self.server is None:
                stack = contextlib.ExitStack()
                self.server = stack.enter_context(serve(tiny_model_dir()))
                self.stack = stack
            self.users += 1
            return self.server

    def release(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users <= 0:
                self.close()

    def close(self) -> None:
        if self.stack is not None:
            self.stack.close()
        self.stack = self.server = None
        self.users = 0


_shared = _Shared()
atexit.register(_shared.close)


@contextlib.contextmanager
def shared_server() -> Iterator[TinyLLMServer]:
    """The default tiny model's server, started on first use and shared by every holder (a
    fixture of another module, say); stopped when the last holder lets go. Skips the calling test
    when the requirements are missing. For a module-level fixture of one's own::

        @pytest.fixture(scope="module")
        def llm():
            with shared_server() as server:
                yield server
    """
    _skip_unless_available()
    server = _shared.acquire()
    try:
        yield server
    finally:
        _shared.release()


@pytest.fixture(scope="session")
def tiny_llm_dir() -> Path:
    """The cached tiny Qwen3 model built on :func:`default_examples` (built on first use)."""
    _skip_unless_available()
    return tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_llm_server() -> Iterator[TinyLLMServer]:
    """A ``transformers serve`` of the default tiny model on 127.0.0.1, shared by the session."""
    with shared_server() as server:
        yield server

"""Decision datasets for the fine-tuning tests: real tool slots, planted numbers.

:func:`planted_setup` builds an :class:`~quantorch.llm.environment.EpisodeSetup` over two real
tools: ``risk:fast`` carries the sign of the forward return in its first feature (the planted
signal), ``technical:basic`` is priced and carries noise (the tiny test model calls it out of
habit, so training has to move it off the noise and onto the signal). The free context is noise
too, so only the risk call tells the model which way to go. Importing this needs no torch.
"""

from __future__ import annotations

import numpy as np

from quantorch.llm.environment import EpisodeSetup
from quantorch.llm.orchestrator import LLMSettingsView
from quantorch.orchestrator.dataset import CONTEXT_FEATURES, DecisionDataset
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.orchestrator.slots import resolve_slots
from quantorch.toolkit.registry import get_tool

PLANTED, NOISE = "risk:fast", "technical:basic"
TICKERS = ("AAPL", "AMD", "BAC", "BBY")  # the first of the sample universe


def planted_profile(allow_short: bool = True) -> TraderProfile:
    """A profile with no tool preferences (so only P&L and cost tell the tools apart)."""
    return TraderProfile(
        name="planted", description="Test trader: P&L and cost only.", risk_aversion=0.0,
        turnover_aversion=0.0, tool_preferences={}, cost_budget_usd=0.01, budget_bps=40.0,
        limits={"allow_short": allow_short},
    )


def planted_dataset(n: int = 64, seed: int = 0, horizon: int = 5) -> DecisionDataset:
    rng = np.random.default_rng(seed)
    slots = resolve_slots([NOISE, PLANTED])
    # as many ups as downs, so holding one position earns nothing but its costs
    forward = rng.permutation(np.resize([1.0, -1.0], n)) * rng.uniform(0.02, 0.05, n)
    technical = rng.normal(0, 1, (n, len(slots[0].features)))
    risk = rng.normal(0, 1, (n, len(slots[1].features)))
    risk[:, 0] = np.sign(forward)  # vol21: the planted signal
    context = rng.normal(0, 1, (n, len(CONTEXT_FEATURES)))
    zero = [0.0] * len(CONTEXT_FEATURES)
    normalisation = {
        "context": (zero, [1.0] * len(CONTEXT_FEATURES)),
        slots[0].key: ([0.0] * technical.shape[1], [1.0] * technical.shape[1]),
        slots[1].key: ([0.0] * risk.shape[1], [1.0] * risk.shape[1]),
    }
    sessions = np.datetime64("2020-01-02") + np.arange(n // len(TICKERS) + 1)
    return DecisionDataset(
        tickers=np.array([TICKERS[i % len(TICKERS)] for i in range(n)], dtype=object),
        dates=sessions[np.arange(n) // len(TICKERS)].astype("datetime64[ns]"),
        context=(context / 100).astype(np.float32),
        slots=slots,
        slot_features=[technical.astype(np.float32), risk.astype(np.float32)],
        slot_coverage=np.ones((n, 2), dtype=bool),
        forward_return=forward,
        daily_volatility=np.full(n, 0.01),
        horizon=horizon,
        normalisation=normalisation,
    )


def planted_setup(n: int = 64, seed: int = 0, profiles=None) -> EpisodeSetup:
    dataset = planted_dataset(n, seed)
    specs = {s.tool: get_tool(s.tool).spec for s in dataset.slots}
    return EpisodeSetup(dataset, profiles or [planted_profile()], specs, EnvConfig(),
                        LLMSettingsView())


class SignalTeacher:
    """A distillation teacher for the planted task: calls the planted slot, then goes long or
    short with the sign it read (an Orchestrator: ``env_config`` and ``choose``)."""

    name = "signal-teacher"

    def env_config(self, base, slots):
        from dataclasses import replace

        return replace(base, allowed_slots=None, forced_routing=None)

    def choose(self, obs, masks, core):
        planted = next(i for i, s in enumerate(core.dataset.slots) if s.key == PLANTED)
        signal = core.dataset.slot_features[planted][core.row, 0]
        bucket = np.where(signal > 0, 4, 0)  # long / short
        return np.where(core.steps == 0, planted, core.n_slots + bucket)


def warm_examples(n: int = 192, seed: int = 7, noise_share: float = 0.8) -> list[dict]:
    """Conversations in the served format on the planted task with *no* skill: the call is the
    noise tool (``noise_share`` of them) or the planted one, and the position is random. A tiny
    model warmed on these knows the format (and copies the ticker), calls the noise tool by
    habit and does not read the signal: the "untrained" model of the planted-signal test."""
    from quantorch.llm.distill import DISTILLED_RATIONALE, render_conversation

    setup = planted_setup(n, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for row in range(n):
        calls = [0 if rng.random() < noise_share else 1]  # slot 0: the noise tool
        bucket = int(rng.choice([0, 2, 3, 4]))
        previous = float(rng.choice([0.0, 0.5, -0.5]))
        conversation = render_conversation(setup, row, 0, previous, calls, bucket,
                                           rationale=DISTILLED_RATIONALE)
        import json

        out.append({"messages": [{k: v for k, v in m.items() if v is not None}
                                 for m in conversation["messages"]],
                    "tools": json.loads(conversation["tools"])})
    return out


def planted_base_dir():
    """The "untrained" tiny Qwen3 of the planted-signal test (built once, then cached): warmed
    on the served format with the shipped slots (``technical`` for any ticker, as the served
    tiny model) and on the planted task without skill (:func:`warm_examples`)."""
    from quantorch.config import load_config
    from tests.support.llm_examples import orchestrator_examples
    from tests.support.tiny_llm import tiny_model_dir

    examples = orchestrator_examples(load_config().universe, n=128) + warm_examples(128)
    return tiny_model_dir(examples)

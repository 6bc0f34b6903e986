"""The fine-tuning environment: one (ticker, session, profile) decision as a tool-calling episode.

``quantorch train-llm`` hands TRL's ``GRPOTrainer(environment_factory=...)`` one environment
class per trader profile (:func:`environment_classes`). An instance is one episode at a time:
``reset(row=..., previous_position=...)`` loads a decision point of the dataset, and its public
methods are what the model may call:

- one method per tool of the slots (``technical(ticker, provider)``, ``risk(...)``, ...), in slot
  order: priced, each tool at most once per decision, within the profile's budget, answered with
  the dataset's numbers rendered by :func:`~quantorch.llm.prompts.tool_result_content`;
- ``submit_decision(position, rationale)``, which ends the decision.

Every call is checked by the *serving* orchestrator's own checks
(:mod:`quantorch.llm.orchestrator`: the JSON schema of the call, the ticker of the decision, the
tool not called yet, the budget left), so a refusal reads exactly as it does when served; the
first refusal is a correction, the second ends the decision with the fallback (keep the
position), as when served. TRL gives no corrective re-prompt: a reply without a function call
ends the rollout, which is scored as the fallback.

The reward (:func:`episode_rewards`) is the decision reward of ``quantorch train``
(:func:`quantorch.orchestrator.reward.decision_reward`), computed the way a backtest computes
the ``llm`` orchestrator's: the episode's calls and bucket are replayed through
:class:`~quantorch.orchestrator.env.DecisionCore` by a
:class:`~quantorch.orchestrator.orchestrators.ScriptedRouter`, with the model's own tokens in
the tool-cost term (``extra_cost``). The GRPO group of one prompt is ``num_generations``
rollouts of the same decision point (TRL repeats the dataset row), so the group shares one state,
as in ToolOrchestra.

What the model sees in training is what it is served: the prompt is rendered by
:mod:`quantorch.llm.prompts`, and the tool schemas offered are :func:`serving_tools`, the
serving ``openai_tools`` dicts, not the schemas TRL would build from the methods'
signatures (transformers' ``get_json_schema`` cannot express ``additionalProperties`` or
``maxLength``, reads the ``Returns:`` in a tool description as a docstring section, and adds a
``return`` key for an annotated return, which vLLM drops and the chat template would render).
``quantorch.training.llm`` installs them in the trainer; a test renders both through the chat
template and compares bytes.

This module imports no vectorbt (a training environment with vLLM pins a numba that vectorbt
refuses): it runs on the decision dataset's arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantorch.llm.orchestrator import (
    LLMSettingsView,
    Plan,
    Refused,
    check_arguments,
    check_tool_call,
    hold_bucket,
    validators,
)
from quantorch.llm.prompts import (
    BUCKET_NAMES,
    SUBMIT,
    DecisionContext,
    allowed_buckets,
    error_content,
    openai_tools,
    system_prompt,
    tool_result_content,
    user_message,
)
from quantorch.orchestrator.dataset import CONTEXT_FEATURES, DecisionDataset
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.orchestrators import ScriptedRouter, decide
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.toolkit.spec import ToolResult, ToolSpec, charged_cost

__all__ = [
    "DecisionEpisode",
    "EpisodeSetup",
    "environment_classes",
    "episode_rewards",
    "serving_tools",
]

_ASOF = "1970-01-01T00:00:00+00:00"


@dataclass
class EpisodeSetup:
    """Everything the episodes of one training run share: the decision points (the dataset's
    arrays: normalised for the decision core, raw for what the model reads), the profiles, the
    tools' specs, the costs and the token prices."""

    dataset: DecisionDataset
    profiles: Sequence[TraderProfile]
    specs: Mapping[str, ToolSpec]
    env_config: EnvConfig = field(default_factory=EnvConfig)
    settings: LLMSettingsView = field(default_factory=LLMSettingsView)
    #: per slot (N, d_k) raw feature values (NaN: not computed); None: un-normalised from the
    #: dataset (exact up to the +-5 clip of the z-scores)
    raw_features: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.profiles = list(self.profiles)
        data = self.dataset
        if self.raw_features is None:
            self.raw_features = [_unscale(data, k) for k in range(len(data.slots))]
        mean, std = (np.asarray(v, dtype=np.float64) for v in data.normalisation["context"])
        self.raw_context = data.context.astype(np.float64) * std + mean  # as the kernel does
        self._system = [system_prompt(p, data.slots, self.specs,
                                      self.settings.usd_per_1m_input_tokens,
                                      self.settings.usd_per_1m_output_tokens)
                        for p in self.profiles]
        self._tools = [openai_tools(data.slots, self.specs, p) for p in self.profiles]
        #: the serving orchestrator's compiled validators, one set per profile
        self._checks = [validators(tools) for tools in self._tools]

    def profile_index(self, name: str) -> int:
        return next(i for i, p in enumerate(self.profiles) if p.name == name)

    def decision(self, row: int, profile: int, previous_position: float) -> DecisionContext:
        """The decision as the ``llm`` orchestrator is shown it (``kernel.step._converse``)."""
        p = self.profiles[profile]
        context = dict(zip(CONTEXT_FEATURES, map(float, self.raw_context[row]), strict=True))
        day = str(np.datetime_as_string(np.datetime64(self.dataset.dates[row], "D")))
        return DecisionContext(str(self.dataset.tickers[row]), day, context,
                               float(previous_position),
                               float(previous_position) * p.limits.max_position,
                               p.cost_budget_usd)

    def prompt(self, row: int, profile: int, previous_position: float) -> list[dict[str, str]]:
        """The system and user messages, exactly as served."""
        return [{"role": "system", "content": self._system[profile]},
                {"role": "user", "content": user_message(self.decision(row, profile,
                                                                       previous_position))}]

    def tools(self, profile: int) -> list[dict[str, Any]]:
        """The serving tool schemas of ``profile`` (a copy)."""
        return json.loads(json.dumps(self._tools[profile]))

    def tool_result(self, row: int, slot: int, budget_left_usd: float) -> str:
        """The ``role: tool`` content of slot ``slot`` at ``row``, as served."""
        spec = self.dataset.slots[slot]
        values = self.raw_features[slot][row]
        features = {name: float(v) for name, v in zip(spec.features, values, strict=True)}
        covered = bool(self.dataset.slot_coverage[row, slot])
        result = ToolResult(tool=spec.tool, provider=spec.provider,
                            ticker=str(self.dataset.tickers[row]), asof=_ASOF,
                            features=features, summary="", coverage=covered,
                            cost_usd=charged_cost(spec.price_usd, covered), latency_ms=0.0)
        return tool_result_content(result, spec.features, budget_left_usd)


def _unscale(data: DecisionDataset, slot: int) -> np.ndarray:
    key = data.slots[slot].key
    values = data.slot_features[slot].astype(np.float64)
    if key in data.normalisation:
        mean, std = (np.asarray(v, dtype=np.float64) for v in data.normalisation[key])
        values = values * std + mean
    return np.where(data.slot_coverage[:, [slot]], values, np.nan)


def serving_tools(setup: EpisodeSetup, profile: int) -> list[dict[str, Any]]:
    """The tool schemas the trainer must render for ``profile``'s episodes: the serving ones."""
    return setup.tools(profile)


class DecisionEpisode:
    """One decision episode (the base of the classes :func:`environment_classes` builds; the
    tool methods are added per slot set, so TRL sees exactly the served tool names).

    Public state after a rollout: ``calls`` (slot indices in call order), ``bucket`` (None:
    no valid ``submit_decision``), ``fallback`` (why the position is kept), ``mistakes``.
    """

    setup: EpisodeSetup
    profile_index: int

    def reset(self, row: int = 0, previous_position: float = 0.0, prompt_tokens: int = 0,
              **_: Any) -> None:
        """Load decision point ``row`` with the position held; the prompt is the dataset's."""
        self.row = int(row)
        self.previous_position = float(previous_position)
        self.prompt_tokens = int(prompt_tokens)
        self.context = self.setup.decision(self.row, self.profile_index, self.previous_position)
        self.plan = Plan(self.context.ticker)
        self.spent = 0.0
        self.mistakes = 0
        self.bucket: int | None = None
        self.rationale = ""
        self.fallback: str | None = None
        return None

    @property
    def calls(self) -> list[int]:
        return self.plan.calls

    @property
    def ended(self) -> bool:
        return self.bucket is not None or self.fallback is not None

    def _profile(self) -> TraderProfile:
        return self.setup.profiles[self.profile_index]

    def _schemas(self) -> dict[str, Any]:
        return self.setup._checks[self.profile_index]

    def _refuse(self, message: str) -> str:
        self.mistakes += 1
        if self.mistakes > 1:
            self.fallback = "a refused function call after a corrective re-prompt"
        return error_content(message)

    def _after_end(self) -> str:
        if self.bucket is not None:
            return error_content(f"ignored: the decision was already submitted by {SUBMIT}")
        return error_content(f"ignored: the decision ended with the fallback ({self.fallback})")

    def _call_tool(self, name: str, arguments: dict[str, Any]) -> str:
        if self.ended:
            return self._after_end()
        setup = self.setup
        profile = self._profile()
        try:
            checked = check_arguments(name, json.dumps(arguments), self._schemas())
            slot = check_tool_call(name, checked, self.context, setup.dataset.slots, self.plan,
                                   self.spent, profile.cost_budget_usd)
        except Refused as exc:
            return self._refuse(str(exc))
        # a tool without data for the point is free, in the budget as in the reward
        covered = bool(setup.dataset.slot_coverage[self.row, slot])
        self.spent += charged_cost(setup.dataset.slots[slot].price_usd, covered)
        self.plan.calls.append(slot)
        return setup.tool_result(self.row, slot, profile.cost_budget_usd - self.spent)

    def _submit(self, position: str, rationale: str) -> str:
        if self.ended:
            return self._after_end()
        try:
            checked = check_arguments(SUBMIT, json.dumps({"position": position,
                                                     "rationale": rationale}), self._schemas())
        except Refused as exc:
            return self._refuse(str(exc))
        bucket = BUCKET_NAMES.index(checked["position"])
        if bucket not in allowed_buckets(self._profile()):  # pragma: no cover - the enum
            return self._refuse(f"position {checked['position']} is not allowed")
        self.bucket = bucket
        self.rationale = " ".join(str(checked["rationale"]).split())[:300]
        return json.dumps({"accepted": True})

    def _final_bucket(self) -> int:
        """The bucket scored: the one submitted, else the position kept (the fallback)."""
        if self.bucket is not None and self.fallback is None:
            return self.bucket
        return hold_bucket(self.previous_position)


def _tool_method(name: str, description: str, providers: Sequence[str]):
    def method(self, ticker: str, provider: str) -> str:
        return self._call_tool(name, {"ticker": ticker, "provider": provider})

    method.__name__ = method.__qualname__ = name
    # Google style for transformers' get_json_schema (the schema actually rendered is
    # serving_tools'); "Returns:" inside the description would be read as a section, so it is
    # written as "Outputs:" here.
    method.__doc__ = (f"{description.replace('Returns:', 'Outputs:')}\n\n"
                      f"Args:\n    ticker: the stock of this decision\n"
                      f"    provider: the provider (choices: {json.dumps(list(providers))})\n")
    return method


def _submit_method(allowed: Sequence[str]):
    def submit_decision(self, position: str, rationale: str) -> str:
        return self._submit(position, rationale)

    choices = json.dumps(list(allowed))
    submit_decision.__doc__ = (
        "Submit the position to hold until the next decision (ends the decision).\n\n"
        "Args:\n"
        f"    position: fraction of the max position per stock (choices: {choices})\n"
        "    rationale: one short sentence: why\n")
    return submit_decision


def environment_classes(setup: EpisodeSetup) -> dict[str, type[DecisionEpisode]]:
    """One environment class per profile (``{profile name: class}``), for TRL's multi-environment
    ``environment_factory``: each has ``reset``, one method per tool of the slots and
    ``submit_decision``; a dataset row's ``environment`` column names its profile."""
    classes: dict[str, type[DecisionEpisode]] = {}
    for index, profile in enumerate(setup.profiles):
        namespace: dict[str, Any] = {"setup": setup, "profile_index": index}
        for tool in setup._tools[index][:-1]:
            function = tool["function"]
            providers = function["parameters"]["properties"]["provider"]["enum"]
            namespace[function["name"]] = _tool_method(function["name"],
                                                       function["description"], providers)
        submit = setup._tools[index][-1]["function"]["parameters"]["properties"]["position"]
        namespace[SUBMIT] = _submit_method(submit["enum"])
        cls_name = "Episode_" + "".join(c if c.isalnum() else "_" for c in profile.name)
        classes[profile.name] = type(cls_name, (DecisionEpisode,), namespace)
    return classes


def model_cost_usd(settings: LLMSettingsView, prompt_tokens: int, completion_tokens: int,
                   rounds: int) -> float:
    """The model's own tokens priced as served: every reply re-reads the prompt (``rounds`` x
    ``prompt_tokens`` in), and the rollout's completion tokens (tool results included: an
    over-count by their length) out."""
    return (rounds * prompt_tokens * settings.usd_per_1m_input_tokens
            + completion_tokens * settings.usd_per_1m_output_tokens) / 1e6


def episode_rewards(environments: Sequence[DecisionEpisode], completions=None,
                    completion_ids=None, **_: Any) -> list[float]:
    """TRL reward function: the decision reward (bps) of every rollout, through the decision
    core (see the module docstring). ``completion_ids`` price the model's tokens."""
    out = [math.nan] * len(environments)
    groups: dict[int, list[int]] = {}
    for i, env in enumerate(environments):
        groups.setdefault(id(env.setup), []).append(i)
    for members in groups.values():
        setup = environments[members[0]].setup
        envs = [environments[i] for i in members]
        extra = []
        for i, env in zip(members, envs, strict=True):
            tokens = len(completion_ids[i]) if completion_ids is not None else 0
            rounds = 1
            if completions is not None and isinstance(completions[i], list):
                rounds = max(1, sum(m.get("role") == "assistant" for m in completions[i]))
            extra.append(model_cost_usd(setup.settings, env.prompt_tokens, tokens, rounds))
        batch = decide(
            ScriptedRouter("llm", tuple(tuple(e.calls) for e in envs),
                           np.array([e._final_bucket() for e in envs], dtype=np.int64)),
            setup.dataset, setup.profiles, setup.env_config,
            np.array([e.row for e in envs], dtype=np.int64),
            np.array([e.profile_index for e in envs], dtype=np.int64),
            np.array([e.previous_position for e in envs]),
            extra_cost=np.array(extra),
        )
        for i, total in zip(members, batch.terms["total"], strict=True):
            out[i] = float(total)
    return out

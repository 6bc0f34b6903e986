"""Trader profiles: a trader's risk limits, style, tool preferences, budget and reward weights.

Profiles live in ``configs/traders/NAME.yaml`` (shipped ones install as
``quantorch.configs/traders``); a file path works too. One policy serves every profile: it is
conditioned on :meth:`TraderProfile.features`.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quantorch.config import read_yaml_file
from quantorch.errors import ConfigError, UserInputError, did_you_mean

__all__ = [
    "RewardWeights",
    "RiskLimits",
    "TraderProfile",
    "list_profiles",
    "load_profile",
    "profile_feature_names",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RiskLimits(_Strict):
    """Hard limits the RiskGuard enforces after every orchestrator (fractions of equity)."""

    max_position: float = Field(0.10, gt=0, le=1, description="max |weight| per ticker")
    max_gross: float = Field(1.0, gt=0, le=3, description="max sum of |weights|")
    max_net: float = Field(1.0, ge=0, le=3, description="max |sum of weights|")
    max_turnover: float = Field(1.0, gt=0, le=6, description="max sum |weight change| per rebalance")
    drawdown_kill: float = Field(
        0.30, gt=0, le=1, description="flatten everything when drawdown from peak exceeds this"
    )
    allow_short: bool = False
    kill_cooldown_sessions: int = Field(
        21, ge=1, le=252, description="sessions to stay flat after the kill switch, then re-arm"
    )


class RewardWeights(_Strict):
    """Weights of ``R = a*pnl - b*risk - tc - l*tool_cost + g*pref`` (see docs/reward.md)."""

    pnl: float = Field(1.0, ge=0, description="a")
    risk: float = Field(1.0, ge=0, description="b: multiplies the profile's risk aversion")
    tool_cost: float = Field(1.0, ge=0, description="l")
    preference: float = Field(1.0, ge=0, description="g")
    gate_preference: bool = Field(
        True, description="preference bonus only when the decision's risk-adjusted P&L is > 0"
    )


class TraderProfile(_Strict):
    """One trader's preferences."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    risk_aversion: float = Field(2.0, ge=0, le=50, description="variance penalty per unit")
    holding_period: int = Field(21, ge=1, le=504, description="typical holding, sessions")
    turnover_aversion: float = Field(
        0.0, ge=0, le=1, description="extra penalty per unit of position change (style)"
    )
    tool_preferences: dict[str, float] = Field(
        default_factory=dict, description="tool name -> preference weight in [0, 1]"
    )
    cost_budget_usd: float = Field(0.05, ge=0, description="max tool spend per decision (USD)")
    budget_bps: float = Field(
        20.0, ge=0, description="reward (bps) a decision must earn to justify spending its whole budget"
    )
    limits: RiskLimits = RiskLimits()
    reward: RewardWeights = RewardWeights()

    @model_validator(mode="after")
    def _preferences_in_range(self) -> TraderProfile:
        for tool, weight in self.tool_preferences.items():
            if not 0 <= weight <= 1:
                raise ValueError(f"tool_preferences.{tool} must be in [0, 1], got {weight}")
        return self

    def preference_vector(self, tools: list[str]) -> np.ndarray:
        """Preference weight per tool, in ``tools`` order (0 for tools not mentioned)."""
        return np.array([self.tool_preferences.get(t, 0.0) for t in tools], dtype=np.float32)

    def features(self, tools: list[str]) -> np.ndarray:
        """The profile as the policy sees it (layout: :func:`profile_feature_names`)."""
        head = [
            math.log1p(self.risk_aversion) / math.log1p(50),
            math.log(self.holding_period) / math.log(504),
            self.turnover_aversion,
            math.log1p(self.cost_budget_usd * 1000) / math.log1p(1000),
            min(self.budget_bps * self.reward.tool_cost, 200.0) / 100,
            self.limits.max_position,
            float(self.limits.allow_short),
        ]
        return np.concatenate([np.asarray(head, np.float32), self.preference_vector(tools)])


def profile_feature_names(tools: list[str]) -> list[str]:
    return [
        "risk_aversion",
        "holding_period",
        "turnover_aversion",
        "cost_budget",
        "tool_cost_pressure",
        "max_position",
        "allow_short",
        *(f"prefers_{t}" for t in tools),
    ]


def _shipped_dir() -> Path:
    return Path(str(resources.files("quantorch.configs").joinpath("traders")))


def list_profiles() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in _shipped_dir().glob("*.yaml"))


def load_profile(name_or_path: str | Path, known_tools: list[str] | None = None) -> TraderProfile:
    """A shipped profile by name, or a profile file by path.

    Raises
    ------
    ConfigError
        Malformed YAML, an unknown key, a bad value, or a preference for a tool that does not
        exist (when ``known_tools`` is given).
    UserInputError
        No shipped profile has that name (the message lists them).
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        shipped = _shipped_dir() / f"{name_or_path}.yaml"
        if not shipped.exists():
            names = list_profiles()
            suggestion = did_you_mean(str(name_or_path), names)
            raise UserInputError(
                f"unknown profile '{name_or_path}'{suggestion}; shipped profiles: "
                f"{', '.join(names)}; or pass a YAML file path"
            )
        path = shipped
    data = read_yaml_file(path, "profile file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of profile settings")
    data.setdefault("name", path.stem)
    try:
        profile = TraderProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown key '{field}' (see configs/traders/neutral.yaml)") from exc
        raise ConfigError(f"{path}: field '{field}': {first['msg']}") from exc
    if known_tools is not None:
        unknown = sorted(set(profile.tool_preferences) - set(known_tools))
        if unknown:
            suggestion = did_you_mean(unknown[0], known_tools)
            raise ConfigError(
                f"{path}: tool_preferences names unknown tool '{unknown[0]}'{suggestion}; "
                f"tools: {', '.join(known_tools)}"
            )
    return profile

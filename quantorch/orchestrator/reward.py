"""The decision reward, as pure functions on arrays (see docs/reward.md).

    R = a * pnl - b * risk - tc - l * tool_cost + g * pref

Every term is a fraction of the notional of a full position, so the terms add up in one unit;
:data:`REWARD_SCALE` converts that unit to basis points for the learner. Tool cost is priced
against the trader's per-decision budget (see :func:`tool_cost_term`). Positions are in [-1, 1] (a fraction of the profile's max
position), returns are simple returns over the horizon from the fill.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "REWARD_SCALE",
    "pnl_term",
    "risk_term",
    "transaction_cost_term",
    "tool_cost_term",
    "preference_term",
    "decision_reward",
]

#: Reward unit: basis points of a full position's notional.
REWARD_SCALE = 1e4


def pnl_term(position: np.ndarray, forward_return: np.ndarray) -> np.ndarray:
    """P&L of holding ``position`` over the horizon: position x forward return."""
    return np.asarray(position) * np.asarray(forward_return)


def risk_term(
    position: np.ndarray, daily_volatility: np.ndarray, horizon: int, risk_aversion: np.ndarray
) -> np.ndarray:
    """Variance penalty: risk_aversion / 2 x (position x sigma_daily)^2 x horizon (>= 0).

    The mean-variance utility's second term, with the variance forecast from trailing
    volatility known at the decision (never the realised variance of the horizon).
    """
    position = np.asarray(position)
    sigma = np.nan_to_num(np.asarray(daily_volatility), nan=0.0)
    return 0.5 * np.asarray(risk_aversion) * (position * sigma) ** 2 * horizon


def transaction_cost_term(
    previous_position: np.ndarray, position: np.ndarray, fee_bps: float, slippage_bps: float
) -> np.ndarray:
    """|change of position| x (fee + slippage), the same cost the backtest engine charges."""
    change = np.abs(np.asarray(position) - np.asarray(previous_position))
    return change * (fee_bps + slippage_bps) / 1e4


def tool_cost_term(
    tool_cost_usd: np.ndarray, cost_budget_usd: np.ndarray, budget_bps: np.ndarray
) -> np.ndarray:
    """Tools' price against the trader's budget: spending the whole per-decision budget costs
    ``budget_bps`` basis points of reward (as a notional fraction, >= 0).

    ``tool_cost_usd`` is what the calls were charged (:func:`quantorch.toolkit.spec.charged_cost`:
    a call whose tool had no data costs nothing), not their list price.

    The economic cost of a data or LLM call on a full position is a few thousandths of a basis
    point and would make routing irrelevant; the budget is what the trader says a decision's
    analysis is worth, so cost is normalised to it (as ToolOrchestra normalises cost).
    """
    budget = np.asarray(cost_budget_usd, dtype=np.float64)
    used = np.divide(
        np.asarray(tool_cost_usd, dtype=np.float64), budget,
        out=np.zeros(np.broadcast(budget, np.asarray(tool_cost_usd)).shape), where=budget > 0,
    )
    return used * np.asarray(budget_bps) / 1e4


def preference_term(
    called: np.ndarray,
    preferences: np.ndarray,
    previous_position: np.ndarray,
    position: np.ndarray,
    turnover_aversion: np.ndarray,
) -> np.ndarray:
    """Agreement with the trader's style, in [-1, 1] per decision.

    Tool fit: the share of the profile's preference mass the called tools cover (0 with no
    preferences). Behaviour fit: minus ``turnover_aversion`` x |position change| / 2.

    Parameters
    ----------
    called
        (batch, n_tools) 0/1: which tools the decision called (any provider).
    preferences
        (batch, n_tools) preference weights in [0, 1].
    """
    called = np.asarray(called, dtype=np.float64)
    preferences = np.asarray(preferences, dtype=np.float64)
    mass = preferences.sum(axis=-1)
    covered = (called * preferences).sum(axis=-1)
    tool_fit = np.divide(covered, mass, out=np.zeros_like(mass), where=mass > 0)
    change = np.abs(np.asarray(position) - np.asarray(previous_position))
    return tool_fit - np.asarray(turnover_aversion) * change / 2


def decision_reward(
    *,
    position: np.ndarray,
    previous_position: np.ndarray,
    forward_return: np.ndarray,
    daily_volatility: np.ndarray,
    horizon: int,
    risk_aversion: np.ndarray,
    fee_bps: float,
    slippage_bps: float,
    tool_cost_usd: np.ndarray,
    cost_budget_usd: np.ndarray,
    budget_bps: np.ndarray,
    called: np.ndarray,
    preferences: np.ndarray,
    turnover_aversion: np.ndarray,
    weights: dict[str, np.ndarray],
    preference_scale: float = 5e-3,
) -> dict[str, np.ndarray]:
    """All terms and the total, each in reward units (bps of full-position notional).

    ``weights`` holds arrays (or scalars) ``pnl``, ``risk``, ``tool_cost``, ``preference`` and
    ``gate`` (1 = gate the preference bonus on a positive risk-adjusted P&L).
    ``preference_scale`` converts the unit-less preference term into notional fractions: with
    the default, a perfect tool fit is worth 50 bps, the order of a week's edge.
    """
    pnl = pnl_term(position, forward_return)
    risk = risk_term(position, daily_volatility, horizon, risk_aversion)
    tc = transaction_cost_term(previous_position, position, fee_bps, slippage_bps)
    tool = tool_cost_term(tool_cost_usd, cost_budget_usd, budget_bps)
    pref = preference_term(called, preferences, previous_position, position, turnover_aversion)
    outcome = weights["pnl"] * pnl - weights["risk"] * risk
    # strictly positive: a flat decision (outcome exactly 0) earns no tool-fit bonus, else
    # calling the preferred tools and staying in cash is a sure bonus (docs/reward.md)
    gate = np.where(np.asarray(weights["gate"]) > 0, (outcome > 0).astype(np.float64), 1.0)
    pref_bonus = weights["preference"] * preference_scale * np.where(pref > 0, pref * gate, pref)
    total = outcome - tc - weights["tool_cost"] * tool + pref_bonus
    return {
        "pnl": pnl * REWARD_SCALE,
        "risk": risk * REWARD_SCALE,
        "transaction_cost": tc * REWARD_SCALE,
        "tool_cost": tool * REWARD_SCALE,
        "preference": pref_bonus * REWARD_SCALE,
        "total": total * REWARD_SCALE,
    }

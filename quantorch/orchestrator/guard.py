"""The RiskGuard: hard limits applied after any orchestrator, outside it.

No orchestrator output, tool output or news text reaches a position without passing here.
Limits come from the trader profile (:class:`~quantorch.orchestrator.profiles.RiskLimits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from quantorch.orchestrator.profiles import RiskLimits

__all__ = ["GuardResult", "apply_risk_guard"]

_EPS = 1e-12


@dataclass(frozen=True)
class GuardResult:
    """Weights after the guard and, per ticker, which limit changed them ('' if none)."""

    weights: np.ndarray
    notes: list[str]
    killed: bool


def apply_risk_guard(
    proposed: np.ndarray,
    current: np.ndarray,
    limits: RiskLimits,
    drawdown: float = 0.0,
) -> GuardResult:
    """Bring proposed target weights within the limits.

    Order: non-finite proposals keep the current weight; shorts are removed unless allowed;
    per-ticker cap; the drawdown kill switch (flat book, turnover limit waived: getting out is
    always allowed); turnover cap (move part of the way); then gross and net caps, which only
    shrink weights towards zero and so take precedence over the turnover cap.

    Parameters
    ----------
    proposed, current
        Target and current weights (fractions of equity), one per ticker.
    drawdown
        Current drawdown of the book from its peak, <= 0 (e.g. -0.12).
    """
    current = np.nan_to_num(np.asarray(current, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    weights = np.asarray(proposed, dtype=np.float64).copy()
    notes = [""] * len(weights)

    def note(mask: np.ndarray, text: str) -> None:
        for i in np.flatnonzero(mask):
            notes[i] = f"{notes[i]}; {text}" if notes[i] else text

    bad = ~np.isfinite(weights)
    note(bad, "non-finite proposal: kept current")
    weights[bad] = current[bad]
    if not limits.allow_short:
        note(weights < 0, "short not allowed")
        weights = np.maximum(weights, 0.0)
    over = np.abs(weights) > limits.max_position
    note(over, "max_position")
    weights = np.clip(weights, -limits.max_position, limits.max_position)

    if drawdown <= -limits.drawdown_kill:
        note(np.abs(weights) > 0, "drawdown kill switch")
        return GuardResult(np.zeros_like(weights), notes, killed=True)

    turnover = np.abs(weights - current).sum()
    if turnover > limits.max_turnover + _EPS:
        note(np.abs(weights - current) > _EPS, "max_turnover")
        weights = current + (weights - current) * (limits.max_turnover / turnover)
        # the current book may itself break the per-ticker or short limits (tightened profile)
        if not limits.allow_short:
            weights = np.maximum(weights, 0.0)
        weights = np.clip(weights, -limits.max_position, limits.max_position)

    gross = np.abs(weights).sum()
    if gross > limits.max_gross + _EPS:
        note(np.abs(weights) > 0, "max_gross")
        weights = weights * (limits.max_gross / gross)
    net = weights.sum()
    if abs(net) > limits.max_net + _EPS:
        side = weights > 0 if net > 0 else weights < 0
        note(side, "max_net")
        excess = abs(net) - limits.max_net
        side_total = np.abs(weights[side]).sum()
        weights[side] = weights[side] * (1 - excess / side_total)
    return GuardResult(weights, notes, killed=False)

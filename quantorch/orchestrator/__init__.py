"""The orchestrator: decision environment, reward, profiles, RiskGuard, orchestrators.

Only light names live here, so that checking a name costs no torch import.
"""

from __future__ import annotations

from quantorch.errors import UserInputError, did_you_mean

__all__ = ["ORCHESTRATORS", "check_orchestrator_name"]

#: Orchestrators: each routes between the priced tools, then picks a position (see
#: :mod:`quantorch.orchestrator.orchestrators`; ``llm`` is a chat model served over an
#: OpenAI-compatible API, :mod:`quantorch.llm.orchestrator`). Buy-and-hold is a rule strategy, not one of
#: them (``--strategy buy-and-hold``): one name, one portfolio.
ORCHESTRATORS = ("policy", "all-tools", "free-tools", "technical-only", "random", "llm")


def check_orchestrator_name(name: str) -> str:
    """``name`` if it is an orchestrator; else one clear :class:`UserInputError`."""
    if name in ORCHESTRATORS:
        return name
    if name == "buy-and-hold":
        raise UserInputError(
            "buy-and-hold is a rule strategy (equal weight, bought once, never rebalanced), not "
            "an orchestrator: use --strategy buy-and-hold"
        )
    suggestion = did_you_mean(name, ORCHESTRATORS)
    raise UserInputError(
        f"unknown orchestrator '{name}'{suggestion}; available: {', '.join(ORCHESTRATORS)}"
    )

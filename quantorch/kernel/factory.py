"""Build an orchestrator backtest strategy from a config: checkpoints, profile, tools, data."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from quantorch.config import QuantorchConfig
from quantorch.errors import UserInputError
from quantorch.orchestrator import check_orchestrator_name
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.orchestrators import make_orchestrator
from quantorch.orchestrator.policy import PolicyCheckpoint, load_checkpoint
from quantorch.orchestrator.profiles import load_profile
from quantorch.orchestrator.strategy import OrchestratorStrategy
from quantorch.store import Store

__all__ = ["shipped_checkpoint", "load_policies", "build_orchestrator_strategy"]


def shipped_checkpoint(name: str) -> Path:
    """Path of a checkpoint shipped in the package (``policy.pt``, ``all-tools.pt``)."""
    return Path(str(resources.files("quantorch.models").joinpath(name)))


def load_policies(config: QuantorchConfig, need_all_tools: bool) -> tuple[PolicyCheckpoint, PolicyCheckpoint | None]:
    """The routing policy and (when needed) the all-tools decision head, tool set checked."""
    from quantorch.training.data import resolve_slots

    def available(checkpoint: PolicyCheckpoint) -> list:
        """The checkpoint's slots as the installed tools describe them (unknown ones left out)."""
        found = []
        for slot in checkpoint.slots:
            try:
                found += resolve_slots([slot.key])
            except UserInputError:
                continue
        return found

    policy = load_checkpoint(config.orchestrator.checkpoint or shipped_checkpoint("policy.pt"))
    policy.check_slots(available(policy))
    all_tools = None
    if need_all_tools:
        all_tools = load_checkpoint(
            config.orchestrator.all_tools_checkpoint or shipped_checkpoint("all-tools.pt")
        )
        all_tools.check_slots(available(all_tools))
    return policy, all_tools


def build_orchestrator_strategy(
    config: QuantorchConfig,
    store: Store,
    *,
    seed: int | None = None,
    policies: tuple[PolicyCheckpoint, PolicyCheckpoint | None] | None = None,
    cache: dict | None = None,
) -> OrchestratorStrategy:
    """The configured orchestrator under the configured profile, ready to backtest."""
    from quantorch.toolkit.market import load_market_data
    from quantorch.toolkit.registry import available_tools
    from quantorch.training.data import WARMUP_SESSIONS

    settings = config.orchestrator
    check_orchestrator_name(settings.name)
    profile = load_profile(settings.profile, known_tools=available_tools())
    policy, all_tools = policies or load_policies(config, settings.name == "all-tools")
    orchestrator = make_orchestrator(
        settings.name, policy, all_tools, seed=config.seed if seed is None else seed
    )
    reference = all_tools if settings.name == "all-tools" else policy
    env_config = EnvConfig(fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps)

    def market(panel):
        return load_market_data(
            store,
            config.data.source,
            panel.tickers,
            panel.dates[0].date(),
            panel.dates[-1].date(),
            benchmark=config.benchmark_symbol,
        )

    return OrchestratorStrategy(
        orchestrator=orchestrator,
        profile=profile,
        slots=list(reference.slots) if reference is not None else [],
        normalisation=reference.normalisation if reference is not None else None,
        horizon=reference.horizon if reference is not None else settings.horizon,
        market=market,
        env_config=env_config,
        warmup_sessions=WARMUP_SESSIONS,
        policy=policy,
        cache=cache,
        observation_names=list(reference.observation_names) if reference is not None else None,
    )

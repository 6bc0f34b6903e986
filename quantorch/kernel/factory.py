"""Build what a run decides with, from a config: checkpoints, profile, slots, participants."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from quantorch.config import ORCHESTRATOR, QuantorchConfig
from quantorch.kernel.participants import OrchestratorParticipant, RuleParticipant
from quantorch.kernel.step import RoutingSetup
from quantorch.orchestrator import check_orchestrator_name
from quantorch.orchestrator.env import EnvConfig
from quantorch.orchestrator.orchestrators import make_orchestrator
from quantorch.orchestrator.policy import PolicyCheckpoint, load_checkpoint
from quantorch.orchestrator.profiles import TraderProfile, load_profile
from quantorch.orchestrator.slots import WARMUP_SESSIONS, available_slots
from quantorch.store import Store
from quantorch.strategies import get_strategy
from quantorch.toolkit.market import load_market_data
from quantorch.toolkit.registry import available_tools

__all__ = [
    "build_participant",
    "load_policies",
    "routing_setup",
    "shipped_checkpoint",
    "trader_profile",
]



def shipped_checkpoint(name: str) -> Path:
    """Path of a checkpoint shipped in the package (``policy.pt``, ``all-tools.pt``)."""
    return Path(str(resources.files("quantorch.models").joinpath(name)))


def load_policies(
    config: QuantorchConfig, need_all_tools: bool
) -> tuple[PolicyCheckpoint, PolicyCheckpoint | None]:
    """The routing policy and (when needed) the all-tools decision head, tool set checked
    against the installed tools (``tools.extra_dirs`` included)."""
    extra = config.tools.extra_dirs
    policy = load_checkpoint(config.orchestrator.checkpoint or shipped_checkpoint("policy.pt"))
    policy.check_slots(available_slots(policy.slots, extra))
    all_tools = None
    if need_all_tools:
        all_tools = load_checkpoint(
            config.orchestrator.all_tools_checkpoint or shipped_checkpoint("all-tools.pt")
        )
        all_tools.check_slots(available_slots(all_tools.slots, extra))
    return policy, all_tools


def trader_profile(config: QuantorchConfig) -> TraderProfile:
    """The configured trader profile (a shipped name or a YAML file), tools checked."""
    return load_profile(config.orchestrator.profile,
                        known_tools=available_tools(config.tools.extra_dirs))


def routing_setup(
    config: QuantorchConfig,
    *,
    seed: int | None = None,
    policies: tuple[PolicyCheckpoint, PolicyCheckpoint | None] | None = None,
    store: Store | None = None,
) -> tuple[RoutingSetup, list[str]]:
    """The configured orchestrator with its slots, normalisation and costs, and the observation
    layout its checkpoint expects.

    The ``llm`` orchestrator routes between the slots the policy was trained on (the same tool
    menu, so the two compare on equal terms); its endpoint is checked here, before any data is
    loaded, and its transcript cache is the store's ``tool_cache``.
    """
    name = check_orchestrator_name(config.orchestrator.name)
    policy, all_tools = policies or load_policies(config, name == "all-tools")
    reference = all_tools if name == "all-tools" else policy
    if name == "llm":
        orchestrator = llm_orchestrator(config, store, reference.slots)
    else:
        orchestrator = make_orchestrator(name, policy, all_tools,
                                         seed=config.seed if seed is None else seed)
    env_config = EnvConfig(fee_bps=config.costs.fee_bps, slippage_bps=config.costs.slippage_bps)
    setup = RoutingSetup(
        orchestrator=orchestrator,
        slots=tuple(reference.slots),
        normalisation=reference.normalisation,
        env_config=env_config,
        horizon=reference.horizon,
    )
    return setup, list(reference.observation_names)


def llm_orchestrator(config: QuantorchConfig, store: Store | None, slots):
    """The ``llm`` orchestrator of the config's ``llm:`` section, its endpoint checked (it is
    reachable, serves the model): one clear line naming the fix otherwise."""
    import asyncio

    from quantorch.llm.cache import TranscriptCache
    from quantorch.llm.client import OpenAIChatModel
    from quantorch.llm.orchestrator import LLMOrchestrator, LLMSettingsView
    from quantorch.llm.settings import LLMSettings
    from quantorch.toolkit.registry import get_tool
    from quantorch.tools.sentiment import looks_like_injection

    model = OpenAIChatModel(LLMSettings.from_config(config.llm))

    async def check() -> None:
        try:
            await model.check()
        finally:
            await model.aclose()

    asyncio.run(check())
    extra = tuple(config.tools.extra_dirs)
    specs = {slot.tool: get_tool(slot.tool, extra).spec for slot in slots}
    return LLMOrchestrator(model, LLMSettingsView.from_config(config.llm), specs,
                           cache=TranscriptCache(store, model.model),
                           injection_check=looks_like_injection)


def build_participant(
    config: QuantorchConfig,
    store: Store,
    *,
    seed: int | None = None,
    policies: tuple[PolicyCheckpoint, PolicyCheckpoint | None] | None = None,
    cache: dict | None = None,
    profile: TraderProfile | None = None,
):
    """The configured decider: a rule strategy or an orchestrator, under the trader profile
    whose RiskGuard limits apply (``profile`` overrides the configured one)."""
    profile = profile or trader_profile(config)
    name = config.backtest.strategy
    if name != ORCHESTRATOR:
        return RuleParticipant(get_strategy(name, config.strategies.get(name)), profile)
    setup, layout = routing_setup(config, seed=seed, policies=policies, store=store)
    benchmark = config.benchmark_symbol
    # the llm orchestrator's tool calls are real calls (their summaries are part of its input)
    tool_calls = "live" if setup.orchestrator.name == "llm" else config.backtest.tool_calls

    def market(panel):
        return load_market_data(store, config.data.source, panel.tickers,
                                panel.dates[0].date(), panel.dates[-1].date(),
                                benchmark=benchmark)

    return OrchestratorParticipant(
        setup=setup,
        profile=profile,
        market=market,
        tool_calls=tool_calls,
        store=store,
        timeout_s=config.tools.timeout_s,
        extra_dirs=tuple(config.tools.extra_dirs),
        expected_observation=layout,
        cache=cache,
        warmup_sessions=WARMUP_SESSIONS,
    )

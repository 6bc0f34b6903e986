"""The decision kernel on real sample data: both tool executors agree, the RiskGuard guards rule
strategies too, the decision path sees no future, and plug-in tools reach orchestrators."""

from __future__ import annotations

import datetime as dt
import textwrap
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantorch.backtest.driver import walk
from quantorch.backtest.runner import simulate_config
from quantorch.config import load_config
from quantorch.data.service import load_panel
from quantorch.kernel.execution import Costs
from quantorch.kernel.executor import PanelExecutor, RunnerExecutor
from quantorch.kernel.factory import build_participant
from quantorch.kernel.participants import RuleParticipant
from quantorch.orchestrator.profiles import RiskLimits, TraderProfile
from quantorch.orchestrator.slots import resolve_slots
from quantorch.store import Store
from quantorch.toolkit.market import load_market_data
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import MarketData

TICKERS = ["AAPL", "JPM", "KO", "XOM", "MSFT"]
TOL = 1e-9


@pytest.fixture(scope="module")
def market(loaded_db_template):
    store = Store(loaded_db_template)
    return load_market_data(store, "sample", TICKERS, dt.date(2019, 6, 1), dt.date(2021, 6, 30),
                            benchmark="SP500")


def test_both_executors_give_the_same_features(market):
    """Whole-period panels and real calls through the runner agree at every (ticker, session)."""
    slots = resolve_slots(load_config().orchestrator.tools)
    sessions = market.prices.dates[(market.prices.dates >= "2021-01-04")][::17][:5]
    panels = PanelExecutor.build(market, slots, TICKERS, sessions)
    live = RunnerExecutor(ToolRunner(None, timeout_s=None), market)
    compared = 0
    for slot in slots:
        for session in sessions:
            from_panels = panels.call(slot, TICKERS, session)
            from_calls = live.call(slot, TICKERS, session)
            for a, b in zip(from_panels, from_calls, strict=True):
                assert b.error is None, b.error
                assert a.ticker == b.ticker and a.asof == b.asof
                for name in slot.features:
                    x, y = a.features[name], b.features[name]
                    assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=1e-9, abs=1e-12), (
                        slot.key, session, a.ticker, name, x, y)
                    compared += 1
    assert compared > 500


# ---- the RiskGuard guards rule strategies ------------------------------------------------------

class _Fixed:
    """A rule strategy whose weights a test chooses (anything at all, NaN and inf included)."""

    warmup_sessions = 0

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights
        self.name = "fixed"

    def target_weights(self, panel, decision_dates):
        rows = np.resize(self.weights, (len(decision_dates), len(panel.tickers)))
        return pd.DataFrame(rows, index=decision_dates, columns=panel.tickers)


limits_strategy = st.builds(
    RiskLimits,
    max_position=st.floats(0.02, 1), max_gross=st.floats(0.05, 2), max_net=st.floats(0, 2),
    max_turnover=st.floats(0.05, 4), drawdown_kill=st.floats(0.02, 0.5),
    allow_short=st.booleans(), kill_cooldown_sessions=st.integers(1, 10),
)


@pytest.fixture(scope="module")
def short_panel(loaded_db_template):
    return load_panel(Store(loaded_db_template), "sample", TICKERS, dt.date(2020, 1, 2),
                      dt.date(2020, 6, 30))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=arrays(np.float64, (3, len(TICKERS)),
                      elements=st.floats(allow_nan=True, allow_infinity=True, width=64)),
       limits=limits_strategy)
def test_no_rule_strategy_output_breaches_a_limit(short_panel, weights, limits):
    profile = TraderProfile(name="test", description="limits under test", limits=limits)
    participant = RuleParticipant(_Fixed(weights), profile)
    dates = short_panel.dates[::3]
    participant.prepare(short_panel, dates)
    walked = walk(short_panel, dates, participant.step, Costs(1, 5), 1e6)
    previous = np.zeros(len(TICKERS))
    for session in dates:
        w = walked.targets[session]
        assert np.all(np.isfinite(w))
        assert np.all(np.abs(w) <= limits.max_position + TOL)
        assert np.abs(w).sum() <= limits.max_gross + TOL
        assert abs(w.sum()) <= limits.max_net + TOL
        assert limits.allow_short or np.all(w >= -TOL)
        previous = w
    assert previous is not None


def test_rule_strategies_pass_the_profile_guard(loaded_db):
    """buy-and-hold of 3 stocks under neutral holds 10% each (max_position), not a third."""
    config = load_config().with_overrides({
        "universe": ["AAPL", "MSFT", "KO"], "backtest.start": dt.date(2021, 1, 1),
        "backtest.end": dt.date(2021, 6, 30), "backtest.strategy": "buy-and-hold",
    })
    sim = simulate_config(config, Store(loaded_db))
    held = sim.result.weights.iloc[5]
    assert held.max() <= 0.10 + 1e-6 and held.min() > 0.09


# ---- no look-ahead through the whole decision path -----------------------------------------------

def test_poisoned_future_changes_no_decision_up_to_t(loaded_db, monkeypatch):
    """Garbage after t in every price, the benchmark and the factors: every decision, tool call
    and target weight up to t is the same."""
    from quantorch.toolkit import market as market_module

    cut = pd.Timestamp("2021-03-31")
    config = load_config().with_overrides({
        "universe": TICKERS, "backtest.start": dt.date(2021, 1, 1),
        "backtest.end": dt.date(2021, 6, 30),
    })
    real = market_module.load_market_data

    def run(poison: bool):
        def load(*args, **kwargs):
            data = real(*args, **kwargs)
            return _poisoned(data, cut) if poison else data

        monkeypatch.setattr("quantorch.kernel.factory.load_market_data", load)
        participant = build_participant(config, Store(loaded_db))
        panel = load_panel(Store(loaded_db), "sample", TICKERS, dt.date(2019, 10, 1),
                           dt.date(2021, 6, 30))
        if poison:
            panel = _poisoned(MarketData(prices=panel), cut).prices
        dates = panel.dates[(panel.dates >= "2021-01-04")][::5]
        participant.prepare(panel, dates)
        trading = replace(panel, **{f: getattr(panel, f).loc["2021-01-04":]
                                    for f in ("close", "open", "high", "low", "volume")})
        return walk(trading, dates, participant.step, Costs(1, 5), 1e6)

    clean, dirty = run(False), run(True)
    before = [s for s in clean.targets if s <= cut]
    assert len(before) >= 10
    for session in before:
        np.testing.assert_array_equal(clean.targets[session], dirty.targets[session])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("reward", "forward_return")}  # noqa: E731
                          for r in rows if pd.Timestamp(r.get("decision_date", r.get("as_of"))) <= cut]
    assert strip(clean.decisions) == strip(dirty.decisions)


def _poisoned(data, cut):
    rng = np.random.default_rng(0)
    prices = data.prices
    garbage = {}
    for name in ("close", "open", "high", "low", "volume"):
        frame = getattr(prices, name).copy()
        after = frame.index > cut
        frame.loc[after] = rng.uniform(1, 1e6, size=frame.loc[after].shape)
        garbage[name] = frame
    bench = data.benchmark
    if bench is not None:
        bench = bench.copy()
        bench[bench.index > cut] = 1e9
    factors = data.factors
    if factors is not None:
        factors = factors.copy()
        factors[factors.index > cut] = 7.0
    return replace(data, prices=type(prices)(**garbage), benchmark=bench, factors=factors)


# ---- plug-in tools reach orchestrators and training ----------------------------------------------

PLUGIN = textwrap.dedent('''
    """A plug-in tool: the sign of the 10-session return (a test of tools.extra_dirs)."""
    import pandas as pd

    from quantorch.toolkit.base import PanelTool
    from quantorch.toolkit.spec import OutputField, ProviderSpec, ToolSpec


    class Drift(PanelTool):
        spec = ToolSpec(
            name="drift",
            description="Sign of the last 10 sessions' return.",
            outputs=(OutputField(name="drift_sign", description="+1 up, -1 down", unit="sign"),),
            providers=(ProviderSpec(name="basic", description="closes", usd_per_call=0.0004,
                                    expected_latency_ms=1),),
            default_provider="basic",
        )

        def series(self, data, provider, tickers):
            close = data.prices.close[tickers]
            return {"drift_sign": (close / close.shift(10) - 1).apply(lambda c: c.map(
                lambda v: float("nan") if pd.isna(v) else (1.0 if v > 0 else -1.0)))}


    TOOL = Drift()
''')

#: A plug-in whose panels work (so it can be trained on) but whose live provider is down.
FLAKY = textwrap.dedent('''
    """A plug-in tool whose real calls fail: the provider is invoked, and billed, but errs."""
    from quantorch.toolkit.base import PanelTool
    from quantorch.toolkit.spec import OutputField, ProviderSpec, ToolSpec


    class Flaky(PanelTool):
        spec = ToolSpec(
            name="flaky",
            description="The 5-session return, from a provider that is down for live calls.",
            outputs=(OutputField(name="ret5", description="5-session return", unit="fraction"),),
            providers=(ProviderSpec(name="basic", description="closes", usd_per_call=0.0003,
                                    expected_latency_ms=1),),
            default_provider="basic",
        )

        def series(self, data, provider, tickers):
            close = data.prices.close[tickers]
            return {"ret5": close / close.shift(5) - 1}

        def run_batch(self, requests, data, provider):
            raise RuntimeError("provider down")


    TOOL = Flaky()
''')


@pytest.mark.slow
def test_a_plug_in_tool_is_trained_on_and_called_in_a_backtest(loaded_db, tmp_path):
    from quantorch.orchestrator.policy import load_checkpoint
    from quantorch.training.pipeline import train_from_config
    from quantorch.training.ppo import PPOSettings

    folder = tmp_path / "my_tools"
    folder.mkdir()
    (folder / "drift.py").write_text(PLUGIN)
    (folder / "flaky.py").write_text(FLAKY)
    config = load_config().with_overrides({
        "tools.extra_dirs": [folder],
        "orchestrator.tools": ["drift:basic", "technical:basic", "flaky:basic"],
        "universe": ["AAPL", "JPM", "KO", "XOM"],
        "training.train_start": dt.date(2016, 1, 1), "training.train_end": dt.date(2016, 12, 31),
        "training.val_start": dt.date(2017, 1, 1), "training.val_end": dt.date(2017, 3, 31),
        "training.profiles": ["neutral"],
        "backtest.start": dt.date(2018, 1, 1), "backtest.end": dt.date(2018, 3, 31),
    })
    store = Store(loaded_db)
    outcome = train_from_config(config, store, tmp_path / "policy.pt",
                                settings=PPOSettings(steps=4_000, n_envs=64, eval_every=2_000,
                                                     net_arch=[16, 16]))
    assert "drift:basic" in {s.key for s in load_checkpoint(outcome.path).slots}
    # all-tools calls every slot of its checkpoint: the plug-in is called for every decision
    config = config.with_overrides({"orchestrator.checkpoint": outcome.path,
                                    "orchestrator.all_tools_checkpoint": outcome.path,
                                    "orchestrator.name": "all-tools"})
    for tool_calls in ("panel", "live"):
        sim = simulate_config(config.with_overrides({"backtest.tool_calls": tool_calls}), store)
        assert len(sim.decisions) > 0
        assert all("drift:basic" in keys for keys in sim.decisions["tools_called"])
        drift = sim.tool_calls[sim.tool_calls["tool"] == "drift"]
        assert len(drift) == len(sim.decisions) and set(drift["executor"]) == {tool_calls}
        assert drift["outputs"].str.contains("drift_sign").all()
        # every decision pays what its calls were billed: live, the failed flaky calls too
        flaky = sim.tool_calls[sim.tool_calls["tool"] == "flaky"]
        assert len(flaky) == len(sim.decisions)
        if tool_calls == "live":
            assert flaky["error"].str.contains("provider down").all()
            assert (flaky["cost_usd"] == 0.0003).all() and not flaky["coverage"].any()
        billed = sim.tool_calls.groupby("decision_id")["cost_usd"].sum()
        paid = sim.decisions.set_index("decision_id")["tool_cost_usd"]
        assert paid.to_numpy() == pytest.approx(billed.reindex(paid.index).to_numpy(), abs=1e-12)


def test_one_forward_return_for_the_dataset_the_views_and_the_report(loaded_db):
    """v_decisions and v_pnl_attribution measure what the decision dataset (and so the reward
    and the report's P&L by tools) measured, opens included."""
    from quantorch import query
    from quantorch.backtest.runner import run_backtest

    store = Store(loaded_db)
    config = load_config().with_overrides({
        "universe": ["^GSPC", "^IXIC"], "benchmark": "none",  # OHLC: fills at the open
        "backtest.start": dt.date(2016, 1, 1), "backtest.end": dt.date(2016, 12, 31),
    })
    outcome = run_backtest(config, store)
    stored = query.run_query(
        store, "SELECT decision_id, forward_return, pnl_usd FROM v_decisions WHERE run_id = ? "
        "ORDER BY decision_id".replace("?", f"'{outcome.run_id}'"),
    ).rows()
    sim = simulate_config(config, store)
    in_memory = sim.decisions.set_index("decision_id")["forward_return"]
    # the run knew the forward return where the horizon ended inside its period; the database
    # holds later prices too, so the view also knows the last few
    known = [(i, f, pnl) for i, f, pnl in stored if np.isfinite(in_memory.loc[i])]
    assert len(known) > 50
    for decision_id, forward, _ in known:
        assert forward == pytest.approx(in_memory.loc[decision_id], rel=1e-12)
    assert sum(pnl for *_, pnl in known) == pytest.approx(
        sum(outcome.tools["pnl_attribution_usd"].values()), rel=1e-9)

"""Backtest and broker replay on one path: the 2021 backtest of the default policy and the same
year replayed session by session through decision_step and the SimulatedBroker (state in
DuckDB) give the same fills and the same daily equity; the kill switch arms on the same session
in both."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest.driver import walk
from quantorch.backtest.runner import _decision_dates, _from, simulate_config
from quantorch.brokers.simulated import SimulatedBroker
from quantorch.config import load_config
from quantorch.data.service import load_panel
from quantorch.kernel.execution import Costs
from quantorch.kernel.factory import build_participant
from quantorch.orchestrator.profiles import TraderProfile, load_profile
from quantorch.orchestrator.slots import WARMUP_SESSIONS
from quantorch.store import Store, repository

REL = 1e-6


def _replay(config, store, account, profile=None):
    """The configured run, replayed session by session through the simulated broker."""
    participant = build_participant(config, store, profile=profile)
    from quantorch.data import calendar

    start, end = config.backtest.start, config.backtest.end
    panel = load_panel(store, config.data.source, list(config.universe),
                       calendar.shift_sessions(start, -WARMUP_SESSIONS).date(), end)
    dates = _decision_dates(panel, start, config.backtest.rebalance)
    participant.prepare(panel, dates)
    costs = Costs(config.costs.fee_bps, config.costs.slippage_bps)
    broker = SimulatedBroker(store, account, costs)
    walked = walk(_from(panel, start), dates, participant.step, costs,
                  config.backtest.initial_cash, broker=broker)
    return walked, broker


@pytest.mark.slow
def test_backtest_and_broker_replay_give_the_same_fills_and_equity(loaded_db):
    store = Store(loaded_db)
    config = load_config().with_overrides({
        "backtest.start": dt.date(2021, 1, 1), "backtest.end": dt.date(2021, 12, 31),
    })
    backtest = simulate_config(config, store)
    walked, broker = _replay(config, store, "parity-2021")

    equity = backtest.result.equity
    np.testing.assert_allclose(walked.equity.reindex(equity.index).to_numpy(),
                               equity.to_numpy(), rtol=REL)
    recorded = backtest.result.fills
    with store.connect(read_only=True) as con:
        stored = repository.fills_for(con, "parity-2021")
        ledger = repository.cash_balance(con, "parity-2021")
    stored = stored.sort_values(["fill_session", "ticker"], ignore_index=True)
    assert len(stored) == len(recorded) > 500
    assert (pd.to_datetime(stored["fill_session"]).to_numpy()
            == pd.to_datetime(recorded["fill_date"]).to_numpy()).all()
    assert (stored["ticker"].to_numpy() == recorded["ticker"].astype(str).to_numpy()).all()
    assert (stored["side"].to_numpy() == recorded["side"].astype(str).to_numpy()).all()
    for column in ("quantity", "fill_price", "fees"):
        np.testing.assert_allclose(stored[column].to_numpy(), recorded[column].to_numpy(),
                                   rtol=REL)
    # the ledger is the cash: deposit + sells - buys - fees
    assert ledger == pytest.approx(float(backtest.result.cash.iloc[-1]), rel=REL, abs=1e-3)
    # the same decisions, tool for tool, on the same books
    pd.testing.assert_frame_equal(pd.DataFrame(walked.decisions), backtest.decisions,
                                  check_exact=False, rtol=REL)
    # every order the broker was sent is stored once, with its deterministic client order id
    with store.connect(read_only=True) as con:
        orders = repository.orders_for(con, "parity-2021")
    assert orders["client_order_id"].is_unique and len(orders) >= len(stored)
    assert set(stored["client_order_id"]) <= set(orders["client_order_id"])


@pytest.mark.slow
def test_the_kill_switch_arms_where_it_arms_in_the_backtest(loaded_db):
    """A profile with a tight drawdown kill (5%) over the 2020 crash: the one-session-at-a-time
    replay flattens and re-arms on exactly the backtest's sessions."""
    store = Store(loaded_db)
    base = load_profile("neutral")
    tight = TraderProfile.model_validate({
        **base.model_dump(), "name": "tight",
        "limits": {**base.limits.model_dump(), "drawdown_kill": 0.05, "kill_cooldown_sessions": 10},
    })
    config = load_config().with_overrides({
        "backtest.start": dt.date(2020, 1, 1), "backtest.end": dt.date(2020, 9, 30),
        "universe": ["AAPL", "JPM", "KO", "XOM", "MSFT", "GE"],
    })
    from quantorch.kernel.participants import OrchestratorParticipant  # noqa: F401

    participant = build_participant(config, store, profile=tight)
    from quantorch.data import calendar

    panel = load_panel(store, "sample", list(config.universe),
                       calendar.shift_sessions(config.backtest.start, -WARMUP_SESSIONS).date(),
                       config.backtest.end)
    dates = _decision_dates(panel, config.backtest.start, config.backtest.rebalance)
    participant.prepare(panel, dates)
    costs = Costs(config.costs.fee_bps, config.costs.slippage_bps)
    in_memory = walk(_from(panel, config.backtest.start), dates, participant.step, costs,
                     config.backtest.initial_cash)
    replayed, _ = _replay(config, store, "kill-2020", profile=tight)
    assert in_memory.kill_sessions, "the 5% kill switch should fire in March 2020"
    assert replayed.kill_sessions == in_memory.kill_sessions
    flat = [s for s, w in in_memory.targets.items() if not np.any(w)]
    assert flat and [s for s, w in replayed.targets.items() if not np.any(w)] == flat

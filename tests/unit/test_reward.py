import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantorch.orchestrator.reward import (
    REWARD_SCALE,
    decision_reward,
    pnl_term,
    preference_term,
    risk_term,
    tool_cost_term,
    transaction_cost_term,
)

positions = st.floats(-1, 1).filter(lambda x: x == 0 or abs(x) > 1e-9)
returns = st.floats(-0.5, 0.5).filter(lambda x: x == 0 or abs(x) > 1e-9)


@given(positions, returns)
def test_pnl_sign_follows_position_and_return(position, forward_return):
    value = pnl_term(np.array(position), np.array(forward_return))
    assert np.sign(value) == np.sign(position) * np.sign(forward_return)


def test_pnl_scale():
    assert pnl_term(np.array(0.5), np.array(0.02)) == pytest.approx(0.01)


@given(positions, st.floats(0, 0.1), st.integers(1, 63), st.floats(0, 20))
def test_risk_is_non_negative_symmetric_and_grows_with_horizon(position, sigma, horizon, aversion):
    risk = risk_term(np.array(position), np.array(sigma), horizon, np.array(aversion))
    assert risk >= 0
    assert risk == pytest.approx(risk_term(np.array(-position), np.array(sigma), horizon, np.array(aversion)))
    assert risk_term(np.array(position), np.array(sigma), horizon + 1, np.array(aversion)) >= risk


def test_risk_value_and_nan_volatility():
    assert risk_term(np.array(1.0), np.array(0.02), 5, np.array(2.0)) == pytest.approx(0.5 * 2 * 0.0004 * 5)
    assert risk_term(np.array(1.0), np.array(np.nan), 5, np.array(2.0)) == 0


@given(positions, positions)
def test_transaction_cost_charged_on_any_change(previous, position):
    cost = transaction_cost_term(np.array(previous), np.array(position), 1.0, 5.0)
    assert cost >= 0
    assert cost == pytest.approx(abs(position - previous) * 6e-4)


def test_tool_cost_normalised_to_the_budget():
    # spending half the budget costs half of budget_bps
    assert tool_cost_term(np.array(0.025), np.array(0.05), np.array(20.0)) == pytest.approx(10e-4)
    assert tool_cost_term(np.array(0.0), np.array(0.0), np.array(20.0)) == 0  # no budget, no call


def test_preference_tool_fit_and_turnover():
    prefs = np.array([[1.0, 0.0, 0.5]])
    assert preference_term(np.array([[1, 0, 1]]), prefs, np.zeros(1), np.zeros(1), np.zeros(1)) == pytest.approx(1.0)
    assert preference_term(np.array([[1, 0, 0]]), prefs, np.zeros(1), np.zeros(1), np.zeros(1)) == pytest.approx(2 / 3)
    assert preference_term(np.array([[0, 1, 0]]), prefs, np.zeros(1), np.zeros(1), np.zeros(1)) == 0
    neutral = preference_term(np.array([[1, 1, 1]]), np.zeros((1, 3)), np.zeros(1), np.zeros(1), np.zeros(1))
    assert neutral == 0  # no preferences: calling tools earns nothing
    churn = preference_term(np.array([[0, 0, 0]]), prefs, np.array([-1.0]), np.array([1.0]), np.array([0.5]))
    assert churn == pytest.approx(-0.5)


def _reward(**overrides):
    base = dict(
        position=np.array([1.0]), previous_position=np.array([0.0]), forward_return=np.array([0.01]),
        daily_volatility=np.array([0.01]), horizon=5, risk_aversion=np.array([1.0]), fee_bps=1.0,
        slippage_bps=5.0, tool_cost_usd=np.array([0.01]), cost_budget_usd=np.array([0.05]),
        budget_bps=np.array([20.0]),
        called=np.array([[1, 0]]), preferences=np.array([[1.0, 0.0]]), turnover_aversion=np.array([0.0]),
        weights={"pnl": 1.0, "risk": 1.0, "tool_cost": 1.0, "preference": 1.0, "gate": 1.0},
    )
    base.update(overrides)
    return decision_reward(**base)


def test_total_is_the_weighted_sum_in_bps():
    terms = _reward()
    expected = terms["pnl"] - terms["risk"] - terms["transaction_cost"] - terms["tool_cost"] + terms["preference"]
    assert terms["total"] == pytest.approx(expected)
    assert terms["pnl"] == pytest.approx(0.01 * REWARD_SCALE)
    assert terms["transaction_cost"] == pytest.approx(6.0)


def test_preference_bonus_gated_on_outcome():
    good = _reward()
    bad = _reward(forward_return=np.array([-0.01]))
    assert good["preference"] > 0 and bad["preference"] == 0
    ungated = _reward(forward_return=np.array([-0.01]),
                      weights={"pnl": 1.0, "risk": 1.0, "tool_cost": 1.0, "preference": 1.0, "gate": 0.0})
    assert ungated["preference"] > 0


def test_a_flat_decision_earns_no_gated_preference_bonus():
    """Outcome exactly 0 (flat, no move) does not pass the gate: else calling the preferred
    tools and staying in cash is a sure bonus."""
    flat = _reward(position=np.array([0.0]))
    assert flat["pnl"] == 0 and flat["preference"] == 0
    ungated = _reward(position=np.array([0.0]),
                      weights={"pnl": 1.0, "risk": 1.0, "tool_cost": 1.0, "preference": 1.0, "gate": 0.0})
    assert ungated["preference"] > 0


def test_weights_scale_their_terms():
    base = _reward()
    cheap = _reward(weights={"pnl": 1.0, "risk": 1.0, "tool_cost": 3.0, "preference": 1.0, "gate": 1.0})
    assert base["total"] - cheap["total"] == pytest.approx(2 * base["tool_cost"])
    none = _reward(weights={"pnl": 1.0, "risk": 0.0, "tool_cost": 1.0, "preference": 0.0, "gate": 1.0})
    assert none["total"] == pytest.approx(base["pnl"] - base["transaction_cost"] - base["tool_cost"])


@settings(max_examples=200)
@given(st.floats(0, 1), st.floats(0, 1))
def test_more_tool_cost_never_helps(cost_a, cost_b):
    low, high = sorted([cost_a, cost_b])
    assert _reward(tool_cost_usd=np.array([low]))["total"] >= _reward(tool_cost_usd=np.array([high]))["total"]

"""walk_forward_targets: each target's met and not-met edge, on hand-built stitched rows."""

import json
import math

import pytest

from quantorch.orchestrator.profiles import TraderProfile, load_profile
from quantorch.walkforward import WalkForwardRow, describe_target, walk_forward_targets

NEUTRAL = load_profile("neutral")
TECHNICAL = load_profile("active-technical")  # prefers technical


def _row(orchestrator, profile="neutral", sharpe=1.0, cost=0.0, tools=None, versus=None):
    return WalkForwardRow(
        orchestrator=orchestrator, profile=profile, sessions=504, sharpe=sharpe,
        sharpe_ci_bootstrap=(sharpe - 1, sharpe + 1), cagr=0.1, max_drawdown=-0.2,
        exposure=0.9, decisions=1000, tool_cost_usd=cost * 1000,
        tool_cost_per_decision_usd=cost, calls_per_decision=1.0, per_fold_sharpe={2016: sharpe},
        deflated_sharpe=0.5, tool_calls_per_decision=tools or {}, versus=versus or {},
    )


def _versus(low, difference=0.3, high=0.9):
    return {"difference": difference, "low": low, "high": high,
            "significant": low > 0 or high < 0, "sessions": 504}


def _profile(name, **preferences):
    return TraderProfile(name=name, description=name, tool_preferences=preferences)


@pytest.mark.parametrize(("policy_sharpe", "policy_cost", "met"), [
    (1.0, 0.02, True),     # equal Sharpe at exactly 20% of the cost
    (1.2, 0.0, True),      # free and better
    (1.0, 0.0201, False),  # just over 20%
    (0.99, 0.01, False),   # cheap but a lower Sharpe
])
def test_a_policy_at_most_a_fifth_of_all_tools_cost(policy_sharpe, policy_cost, met):
    rows = [_row("policy", sharpe=policy_sharpe, cost=policy_cost),
            _row("all-tools", sharpe=1.0, cost=0.1)]
    target = walk_forward_targets(rows, [NEUTRAL])["a:neutral"]
    assert target["met"] is met
    assert target["cost_ratio"] == pytest.approx(policy_cost / 0.1)
    assert target["policy_sharpe"] == policy_sharpe and target["all_tools_sharpe"] == 1.0


def test_a_needs_every_shipped_profile():
    rows = [_row("policy", p, sharpe=1.0, cost=0.01) for p in ("neutral", "active-technical")]
    rows += [_row("all-tools", p, sharpe=1.0, cost=0.1) for p in ("neutral", "active-technical")]
    both = walk_forward_targets(rows, [NEUTRAL, TECHNICAL],
                                shipped=["neutral", "active-technical"])
    assert both["a"]["met"] and both["a"]["profiles_met"] == ["neutral", "active-technical"]
    # a profile not evaluated fails (a) however well the others do
    one = walk_forward_targets(rows[::2], [NEUTRAL], shipped=["neutral", "active-technical"])
    assert one["a:neutral"]["met"] and not one["a"]["met"]
    assert one["a"]["profiles_missing"] == ["active-technical"]
    # one profile not met fails it too
    rows[0] = _row("policy", "neutral", sharpe=0.5, cost=0.01)
    worse = walk_forward_targets(rows, [NEUTRAL, TECHNICAL])
    assert not worse["a"]["met"] and worse["a"]["profiles_not_met"] == ["neutral"]
    # an all-tools head that spends nothing cannot be undercut by 80%
    free = walk_forward_targets([_row("policy", cost=0.0), _row("all-tools", cost=0.0)],
                                [NEUTRAL])
    assert free["a:neutral"]["cost_ratio"] is None and not free["a:neutral"]["met"]


def _b(neutral_rate, rate, sharpe=1.0, neutral_sharpe=1.0):
    rows = [_row("policy", "neutral", sharpe=neutral_sharpe, tools={"technical": neutral_rate}),
            _row("policy", "active-technical", sharpe=sharpe, tools={"technical": rate})]
    return walk_forward_targets(rows, [NEUTRAL, TECHNICAL], tools=["technical"])["b:technical"]


@pytest.mark.parametrize(("neutral_rate", "rate", "met"), [
    (0.1, 0.3, True),     # exactly 3x (0.30000000000000004 after rounding)
    (0.1, 0.29, False),
    (0.25, 0.75, True),
    (0.3, 0.9, True),     # 3x and the 90% floor agree at 30%
    (0.4, 0.9, True),     # neutral above 30%: 90% of decisions is enough
    (0.4, 0.89, False),
    (0.95, 0.95, True),   # above 90% already: keeping it is enough
    (0.95, 0.92, False),  # ... lowering it is not
    (0.0, 0.01, True),    # neutral never calls it: any call is a lift
    (0.0, 0.0, False),
])
def test_b_calls_per_decision_lift(neutral_rate, rate, met):
    target = _b(neutral_rate, rate)
    assert target["met"] is met, target
    assert target["profile"] == "active-technical"
    assert target["calls_per_decision"] == rate
    assert target["neutral_calls_per_decision"] == neutral_rate


@pytest.mark.parametrize(("sharpe", "met"), [(0.9, True), (1.1, True), (0.89, False),
                                             (1.11, False)])
def test_b_sharpe_within_ten_percent_of_neutral(sharpe, met):
    target = _b(0.1, 0.5, sharpe=sharpe, neutral_sharpe=1.0)
    assert target["met"] is met
    assert target["sharpe_gap"] == pytest.approx(abs(sharpe - 1.0))


def test_b_any_preferring_profile_will_do_and_unpreferred_tools_fail():
    risky, cautious = _profile("risky", risk=1.0), _profile("cautious", risk=0.5)
    rows = [_row("policy", "neutral", tools={"risk": 0.1, "sentiment": 0.2}),
            _row("policy", "risky", tools={"risk": 0.2}),       # not enough
            _row("policy", "cautious", tools={"risk": 0.4})]    # 4x neutral
    targets = walk_forward_targets(rows, [NEUTRAL, risky, cautious],
                                   tools=["risk", "sentiment"])
    assert targets["b:risk"]["met"] and targets["b:risk"]["profile"] == "cautious"
    assert set(targets["b:risk"]["by_profile"]) == {"risky", "cautious"}
    assert not targets["b:risk"]["by_profile"]["risky"]["met"]
    assert targets["b:sentiment"] == {"rule": targets["b:sentiment"]["rule"],
                                      "note": "no profile prefers it", "met": False}
    assert describe_target("b:sentiment", targets["b:sentiment"]) == "no profile prefers it"
    # without the policy under neutral there is no rate to lift
    alone = walk_forward_targets(rows[1:], [risky, cautious], tools=["risk"])
    assert not alone["b:risk"]["met"] and "neutral" in alone["b:risk"]["note"]


@pytest.mark.parametrize(("letter", "baseline"), [("c", "random"), ("e", "free-tools")])
@pytest.mark.parametrize(("low", "met"), [(0.01, True), (0.0, False), (-0.2, False)])
def test_c_and_e_need_the_paired_interval_above_zero(letter, baseline, low, met):
    rows = [_row("policy", sharpe=1.2, cost=0.01, versus={baseline: _versus(low)}),
            _row(baseline, sharpe=0.9, cost=0.02)]
    target = walk_forward_targets(rows, [NEUTRAL])[f"{letter}:neutral"]
    assert target["met"] is met  # the policy's point Sharpe is higher in every case
    assert (target["difference"], target["low"], target["high"]) == (0.3, low, 0.9)
    if letter == "c":
        assert target["cost_ratio"] == pytest.approx(2.0)  # random / policy per decision
    assert "paired 95%" in describe_target(f"{letter}:neutral", target)


@pytest.mark.parametrize(("policy_sharpe", "met"), [(0.51, True), (0.5, False), (0.3, False)])
def test_d_policy_sharpe_above_buy_and_hold(policy_sharpe, met):
    rows = [_row("policy", sharpe=policy_sharpe,
                 versus={"buy-and-hold": _versus(-0.5, policy_sharpe - 0.5)}),
            _row("buy-and-hold", sharpe=0.5)]
    target = walk_forward_targets(rows, [NEUTRAL])["d:neutral"]
    assert target["met"] is met  # on the point estimate; the paired interval is reported
    assert target["buy_and_hold_sharpe"] == 0.5 and target["low"] == -0.5


def test_checks_without_their_rows_are_left_out_and_nan_is_not_met():
    assert walk_forward_targets([_row("buy-and-hold")], [NEUTRAL]) == {}
    rows = [_row("policy", sharpe=math.nan, versus={"buy-and-hold": _versus(math.nan)}),
            _row("buy-and-hold", sharpe=0.5)]
    targets = walk_forward_targets(rows, [NEUTRAL], tools=[])
    assert set(targets) == {"d:neutral"}
    assert not targets["d:neutral"]["met"] and targets["d:neutral"]["policy_sharpe"] is None
    json.dumps(targets, allow_nan=False)
    assert "n/a" in describe_target("d:neutral", targets["d:neutral"])

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantorch.orchestrator.guard import apply_risk_guard
from quantorch.orchestrator.profiles import RiskLimits, list_profiles, load_profile

TOL = 1e-9
anything = st.floats(allow_nan=True, allow_infinity=True, width=64)
limits_strategy = st.builds(
    RiskLimits,
    max_position=st.floats(0.01, 1),
    max_gross=st.floats(0.05, 3),
    max_net=st.floats(0, 3),
    max_turnover=st.floats(0.01, 6),
    drawdown_kill=st.floats(0.01, 1),
    allow_short=st.booleans(),
)


def feasible(weights, limits):
    return (
        np.all(np.abs(weights) <= limits.max_position + TOL)
        and np.abs(weights).sum() <= limits.max_gross + TOL
        and abs(weights.sum()) <= limits.max_net + TOL
        and (limits.allow_short or np.all(weights >= -TOL))
    )


@settings(max_examples=400, deadline=None)
@given(
    arrays(np.float64, 12, elements=anything),
    arrays(np.float64, 12, elements=st.floats(-2, 2)),
    limits_strategy,
    st.floats(-1, 0),
)
def test_no_output_can_breach_the_limits(proposed, current, limits, drawdown):
    result = apply_risk_guard(proposed, current, limits, drawdown)
    assert np.all(np.isfinite(result.weights))
    assert feasible(result.weights, limits)
    if drawdown <= -limits.drawdown_kill:
        assert result.killed and np.all(result.weights == 0)


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, 8, elements=st.floats(-5, 5)), limits_strategy)
def test_turnover_respected_from_a_feasible_book(proposed, limits):
    current = apply_risk_guard(np.zeros(8) + 0.01, np.zeros(8), limits).weights
    result = apply_risk_guard(proposed, current, limits)
    assert np.abs(result.weights - current).sum() <= limits.max_turnover + 1e-7


def test_within_limits_is_untouched():
    limits = RiskLimits(max_position=0.1, max_gross=1.0, max_net=1.0, max_turnover=1.0)
    proposed = np.array([0.05, 0.1, 0.0])
    result = apply_risk_guard(proposed, np.zeros(3), limits)
    assert np.array_equal(result.weights, proposed) and result.notes == ["", "", ""]


def test_notes_name_the_limit():
    limits = RiskLimits(max_position=0.1)
    result = apply_risk_guard(np.array([0.5, -0.2, np.nan]), np.array([0.0, 0.0, 0.07]), limits)
    assert result.weights.tolist() == [0.1, 0.0, 0.07]
    assert "max_position" in result.notes[0] and "short" in result.notes[1] and "non-finite" in result.notes[2]


def test_shipped_profiles_load_and_differ():
    names = list_profiles()
    assert {"neutral", "cautious-fundamental", "active-technical", "cost-conscious-quant"} <= set(names)
    profiles = [load_profile(n) for n in names]
    assert len({p.limits for p in profiles}) >= 3

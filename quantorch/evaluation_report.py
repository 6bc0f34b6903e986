"""The HTML page of one ``quantorch evaluate`` run.

It shows, for every (orchestrator, profile): the results table (percentages, Sharpe with its
block-bootstrap 95% interval, mean gross exposure and flat decisions, tool cost in USD, calls
per decision), the tool-cost-vs-Sharpe
plot (colour = profile, marker = orchestrator, bars = the bootstrap interval), the equity
curves (one small chart per profile) and the product's targets with their figures.

The page uses the same shell as the backtest report (:func:`quantorch.backtest.report.write_page`):
the shared plotly.js beside it, no network, written atomically.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from quantorch.backtest.report import WARNING_KEYS, write_page
from quantorch.store import code_version

if TYPE_CHECKING:
    from quantorch.evaluation import Evaluation, EvaluationRow

__all__ = ["EVALUATION_CHART_IDS", "write_evaluation_report"]

#: ``id`` of each chart's ``<div>``.
EVALUATION_CHART_IDS = ("cost-sharpe-chart", "equity-curves-chart")

_PROFILE_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
)  # fmt: skip
_ORCHESTRATOR_SYMBOLS = (
    "circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down",
    "pentagon", "hexagon",
)  # fmt: skip
_LINE_COLOURS = (
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f", "#8c564b", "#17becf",
)  # fmt: skip
_PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtons": [["toImage", "zoom2d", "resetScale2d"]],
}
#: Target letters (docs/reward.md) in words.
_TARGETS = {
    "a": "cheaper than all-tools",
    "b": "follows the profile's preference",
    "c": "beats random routing",
}
_FIGURE_LABELS = {
    "policy_sharpe": "policy Sharpe",
    "all_tools_sharpe": "all-tools Sharpe",
    "random_sharpe": "random Sharpe",
    "cost_ratio": "policy cost / all-tools cost",
    "policy_cost_usd": "policy tool cost",
    "random_cost_usd": "random tool cost",
    "matched_cost_ratio": "random / policy tool cost per decision",
    "share": "preferred tool's share of calls",
    "neutral_share": "neutral profile's share",
    "ratio": "share ratio",
    "sharpe": "Sharpe",
    "neutral_sharpe": "neutral Sharpe",
}


def write_evaluation_report(evaluation: Evaluation, folder: Path) -> Path:
    """Write ``<folder>/<run id>.html`` for ``evaluation`` and return its absolute path.

    Parameters
    ----------
    evaluation
        The :class:`~quantorch.evaluation.Evaluation` to show. Rows without an ``equity``
        curve are left out of the equity charts only.
    folder
        Report folder; created if missing, and receives the shared plotly.js.
    """
    rows = list(evaluation.rows)
    profiles = list(dict.fromkeys(r.profile for r in rows))
    orchestrators = list(dict.fromkeys(r.orchestrator for r in rows))
    title = f"quantorch evaluation {evaluation.run_id}"
    meta = {
        "run id": evaluation.run_id,
        "held-out period": f"{_day(evaluation.start)} to {_day(evaluation.end)}",
        "profiles": ", ".join(profiles) or "none",
        "orchestrators": ", ".join(orchestrators) or "none",
        "seeds": ", ".join(sorted({str(r.seeds) for r in rows})) or "n/a",
        "code version": code_version(),
    }
    if evaluation.training_window is not None:
        meta["training window"] = evaluation.training_window["message"]
    meta_rows = "".join(
        f'<tr class="{"warning" if k in WARNING_KEYS else "fact"}"><td class="key"><b>{_esc(k)}'
        f'</b></td><td>{_esc(v)}</td></tr>' for k, v in meta.items()
    )
    body = "\n".join(
        [
            f"<h1>{_esc(title)}</h1>",
            f'<table class="meta">{meta_rows}</table>',
            (
                '<nav><a href="#results">Results</a><a href="#cost-sharpe">Cost vs Sharpe</a>'
                '<a href="#equity">Equity curves</a><a href="#targets">Targets</a></nav>'
            ),
            '<h2 id="results">Results</h2>',
            _results_table(rows),
            '<h2 id="cost-sharpe">Tool cost per decision vs Sharpe</h2>',
            _cost_sharpe_chart(rows, profiles, orchestrators),
            '<h2 id="equity">Equity curves</h2>',
            _equity_charts(rows, profiles, orchestrators),
            '<h2 id="targets">Targets</h2>',
            _targets_table(evaluation.targets),
            _note(
                f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by quantorch. Every "
                "orchestrator is backtested with the same engine, data and costs as "
                "<code>quantorch backtest</code>; see docs/reward.md for the targets."
            ),
        ]
    )
    path = Path(folder) / f"{evaluation.run_id}.html"
    return write_page(path, title, body).resolve()


# --------------------------------------------------------------------------- formatting


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _pct(value: object, decimals: int = 1) -> str:
    if not _finite(value):
        return "n/a"
    return f"{float(value) * 100:,.{decimals}f}%"  # type: ignore[arg-type]


def _num(value: object, decimals: int = 2) -> str:
    return f"{float(value):,.{decimals}f}" if _finite(value) else "n/a"  # type: ignore[arg-type]


def _usd(value: object, decimals: int = 2) -> str:
    return f"${float(value):,.{decimals}f}" if _finite(value) else "n/a"  # type: ignore[arg-type]


def _interval(
    value: object, bounds: Sequence[float | None] | None, fmt: Callable[[object], str]
) -> str:
    """``0.77 [-0.16, 2.15]``; the bracket is left out when the interval is unknown."""
    low, high = (tuple(bounds) + (None, None))[:2] if bounds is not None else (None, None)
    if not (_finite(low) and _finite(high)):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def _day(value: object) -> str:
    if value is None or (not isinstance(value, dt.date) and pd.isna(value)):
        return "n/a"
    return pd.Timestamp(value).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- sections


def _results_table(rows: Sequence[EvaluationRow]) -> str:
    if not rows:
        return _note("No results.")
    header = [
        "orchestrator", "profile", "Sharpe [95% bootstrap]", "\u00b1 over seeds",
        "CAGR [95% bootstrap]", "max drawdown", "exposure", "flat",
        "turnover (per year)", "tool cost (USD)", "per decision (USD)",
        "calls per decision", "preference adherence",
    ]  # fmt: skip
    lines = []
    previous_profile = None
    for row in rows:
        seeds_low, seeds_high = (tuple(row.sharpe_ci_seeds) + (None, None))[:2]
        if row.seeds > 1 and _finite(seeds_low) and _finite(seeds_high) and seeds_high > seeds_low:
            half = (seeds_high - seeds_low) / 2
            over_seeds = f"\u00b1{_num(half)} ({row.seeds})"
        else:
            over_seeds = "\u2013" if row.seeds > 1 else "1 seed"
        cells = [
            _esc(row.orchestrator),
            _esc(row.profile),
            _interval(row.sharpe, row.sharpe_ci_bootstrap, _num),
            over_seeds,
            _interval(row.cagr, row.cagr_ci_bootstrap, _pct),
            _pct(row.max_drawdown),
            _num(row.exposure, 2),
            _pct(row.flat_share, 0) if row.flat_share is not None else "\u2013",
            f"{_num(row.turnover, 1)}\u00d7" if _finite(row.turnover) else "n/a",
            _usd(row.tool_cost_usd, 2),
            _usd(row.tool_cost_per_decision_usd, 4),
            _num(row.calls_per_decision, 2),
            _pct(row.preference_adherence)
            if row.preference_adherence is not None
            else "\u2013",
        ]
        separator = ' class="group"' if previous_profile not in (None, row.profile) else ""
        previous_profile = row.profile
        tds = "".join(
            f'<td class="key">{c}</td>' if i < 2 else f"<td>{c}</td>" for i, c in enumerate(cells)
        )
        lines.append(f"<tr{separator}>{tds}</tr>")
    head = "".join(
        f'<th class="key">{h}</th>' if i < 2 else f"<th>{h}</th>" for i, h in enumerate(header)
    )
    table = f'<table class="results"><tr>{head}</tr>{"".join(lines)}</table>'
    return "\n".join(
        [
            f'<div class="wide">{table}</div>',
            _note(
                "Sharpe: annualised, risk-free rate 0, mean over seeds. The bracket after "
                "Sharpe and CAGR is the 95% interval of a stationary block bootstrap of the daily "
                'returns (blocks of 21 sessions on average, 1,000 resamples); "\u00b1 over seeds" '
                "is 1.96 standard errors across seeds, with their number (only the random router "
                "draws random numbers; \u2013 when the seeds agree). Exposure is the book's mean "
                "gross exposure over the sessions (1 = fully invested); flat is the share of "
                "decisions left at a weight of 0 after the RiskGuard (a baseline that loses by "
                "sitting in cash shows here; \u2013 for buy-and-hold, which makes no decisions). "
                "Tool cost is the total paid over the period (for llm, its own tokens too), "
                "per decision its mean; random's call probability is matched to the policy's "
                "realised tool cost per decision under the same profile (the ratio is under "
                "Targets, c). Preference adherence is the share of the profile's tool-preference "
                "weight the decisions covered (\u2013 under a profile without preferences)."
            ),
        ]
    )


def _cost_sharpe_chart(
    rows: Sequence[EvaluationRow], profiles: Sequence[str], orchestrators: Sequence[str]
) -> str:
    if not rows:
        return _note("No results to plot.")
    colour = {p: _PROFILE_COLOURS[i % len(_PROFILE_COLOURS)] for i, p in enumerate(profiles)}
    symbol = {
        o: _ORCHESTRATOR_SYMBOLS[i % len(_ORCHESTRATOR_SYMBOLS)]
        for i, o in enumerate(orchestrators)
    }
    costs = np.array([r.tool_cost_per_decision_usd for r in rows], dtype=np.float64)
    finite_costs = costs[np.isfinite(costs)]
    span = float(finite_costs.max() - finite_costs.min()) if len(finite_costs) else 0.0
    # Profiles often tie (buy-and-hold is the same run under every profile): nudge each
    # profile sideways by a fixed share of the axis so no marker hides another.
    step = (span or 1e-3) * 0.02
    fig = go.Figure()
    for row in rows:
        shift = (profiles.index(row.profile) - (len(profiles) - 1) / 2) * step
        low, high = (tuple(row.sharpe_ci_bootstrap) + (None, None))[:2]
        has_ci = _finite(low) and _finite(high) and _finite(row.sharpe)
        interval = f"[{_num(low)}, {_num(high)}]" if has_ci else "n/a"
        fig.add_scatter(
            x=[row.tool_cost_per_decision_usd + shift],
            y=[row.sharpe],
            mode="markers",
            marker={
                "color": colour[row.profile],
                "symbol": symbol[row.orchestrator],
                "size": 12,
                "line": {"color": "white", "width": 1},
            },
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [high - row.sharpe if has_ci else 0.0],
                "arrayminus": [row.sharpe - low if has_ci else 0.0],
                "color": colour[row.profile],
                "thickness": 1.2,
                "width": 4,
            },
            showlegend=False,
            hovertemplate=(
                f"<b>{_esc(row.orchestrator)}</b> under <b>{_esc(row.profile)}</b><br>"
                f"Sharpe {_num(row.sharpe)} {interval}<br>"
                f"tool cost per decision {_usd(row.tool_cost_per_decision_usd, 4)}<br>"
                f"calls per decision {_num(row.calls_per_decision)}<extra></extra>"
            ),
        )
    for profile in profiles:  # legend entries only: colour = profile
        fig.add_scatter(
            x=[None], y=[None], mode="markers", name=profile, legendgroup="profiles",
            legendgrouptitle_text="profile (colour)",
            marker={"color": colour[profile], "symbol": "circle", "size": 11},
        )  # fmt: skip
    for orchestrator in orchestrators:  # legend entries only: marker = orchestrator
        fig.add_scatter(
            x=[None], y=[None], mode="markers", name=orchestrator, legendgroup="orchestrators",
            legendgrouptitle_text="orchestrator (marker)",
            marker={"color": "#555", "symbol": symbol[orchestrator], "size": 11},
        )  # fmt: skip
    fig.update_layout(
        template="plotly_white",
        height=480,
        margin={"l": 70, "r": 20, "t": 20, "b": 60},
        legend={"groupclick": "toggleitem", "tracegroupgap": 18, "itemclick": False},
        hovermode="closest",
        xaxis={"title": {"text": "tool cost per decision (USD)"}, "tickformat": "$,.3f",
               "rangemode": "tozero", "zeroline": True},
        yaxis={"title": {"text": "Sharpe ratio (annualised)"}, "zeroline": True},
    )  # fmt: skip
    div = pio.to_html(
        fig, include_plotlyjs=False, full_html=False, div_id=EVALUATION_CHART_IDS[0],
        config=_PLOT_CONFIG,
    )  # fmt: skip
    return div + _note(
        "Each marker is one orchestrator (marker shape) under one profile (colour); the "
        "vertical bar is the Sharpe ratio's block-bootstrap 95% interval. Up and to the left "
        "is better: more Sharpe for less tool cost. Markers of different profiles are nudged "
        "sideways by 2% of the axis so ties stay visible; hover a marker for its exact "
        "figures."
    )


def _equity_charts(
    rows: Sequence[EvaluationRow], profiles: Sequence[str], orchestrators: Sequence[str]
) -> str:
    with_curve = [r for r in rows if r.equity is not None and len(r.equity.dropna()) > 1]
    if not with_curve:
        return _note("No equity curves in this evaluation.")
    shown = [p for p in profiles if any(r.profile == p for r in with_curve)]
    columns = 2 if len(shown) > 1 else 1
    n_rows = math.ceil(len(shown) / columns)
    fig = make_subplots(
        rows=n_rows, cols=columns, subplot_titles=[f"profile: {p}" for p in shown],
        shared_yaxes=True, horizontal_spacing=0.05, vertical_spacing=0.16 / max(n_rows, 1) + 0.04,
    )  # fmt: skip
    colour = {o: _LINE_COLOURS[i % len(_LINE_COLOURS)] for i, o in enumerate(orchestrators)}
    legend_done: set[str] = set()
    for k, profile in enumerate(shown):
        position = {"row": k // columns + 1, "col": k % columns + 1}
        for row in (r for r in with_curve if r.profile == profile):
            equity = row.equity.dropna()
            fig.add_scatter(
                x=list(pd.DatetimeIndex(equity.index).strftime("%Y-%m-%d")),
                y=equity.to_numpy(dtype=np.float32),
                name=row.orchestrator,
                legendgroup=row.orchestrator,
                showlegend=row.orchestrator not in legend_done,
                line={"color": colour[row.orchestrator], "width": 1.3},
                hovertemplate=f"{_esc(row.orchestrator)}: %{{y:,.0f}}<extra></extra>",
                **position,
            )
            legend_done.add(row.orchestrator)
    fig.update_layout(
        template="plotly_white",
        height=300 * n_rows + 80,
        margin={"l": 80, "r": 20, "t": 60, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0 + 40 / (300 * n_rows + 80),
                "xanchor": "left", "x": 0},
        hovermode="x unified",
    )  # fmt: skip
    fig.update_yaxes(tickformat=",.0f")
    for k in range(n_rows):
        fig.update_yaxes(title_text="equity (USD)", row=k + 1, col=1)
    fig.update_xaxes(hoverformat="%Y-%m-%d")
    div = pio.to_html(
        fig, include_plotlyjs=False, full_html=False, div_id=EVALUATION_CHART_IDS[1],
        config=_PLOT_CONFIG,
    )  # fmt: skip
    return div + _note(
        "Portfolio value at each session close under each profile, one line per orchestrator "
        "(the first seed of the random router), same start cash, costs charged."
    )


def _targets_table(targets: Mapping[str, Mapping]) -> str:
    if not targets:
        return _note(
            "No target could be checked (they need the policy, all-tools and random rows)."
        )
    lines = []
    for key, target in targets.items():
        letter, _, rest = key.partition(":")
        profile, _, tool = rest.partition(":")
        what = _TARGETS.get(letter, letter)
        name = f"<b>{_esc(letter)}</b>: {_esc(what)}<br>profile {_esc(profile)}"
        if tool:
            name += f", tool {_esc(tool)}"
        figures = "<br>".join(
            f"{_esc(_FIGURE_LABELS.get(k, k))}: {_figure(k, v)}"
            for k, v in target.items()
            if k not in ("rule", "met")
        )
        met = target.get("met")
        verdict = '<span class="met">met</span>' if met else '<span class="not-met">not met</span>'
        lines.append(
            f'<tr><td class="key">{name}</td><td class="key">{_esc(target.get("rule", ""))}</td>'
            f'<td class="key">{figures}</td><td class="key">{verdict}</td></tr>'
        )
    head = "".join(f'<th class="key">{h}</th>' for h in ("target", "rule", "figures", "result"))
    return f'<table class="targets"><tr>{head}</tr>{"".join(lines)}</table>'


def _figure(key: str, value: object) -> str:
    if not _finite(value):
        return "n/a"
    if key.endswith("_usd"):
        return _usd(value, 2)
    if key in ("share", "neutral_share", "cost_ratio"):
        return _pct(value)
    if key in ("ratio", "matched_cost_ratio"):
        return f"{_num(value)}\u00d7"
    return _num(value)

"""The HTML page of one ``quantorch evaluate --walk-forward`` sweep.

It shows the stitched out-of-sample figures of every (orchestrator, profile) with the folds
they come from, the target checks (met / not met, with their figures), the paired Sharpe
differences against the baselines, the stitched equity curves (one chart per profile, fold
boundaries dotted), each fold's Sharpe with its 95% interval, the tool-cost-vs-Sharpe plane
over every fold with the stitched points and their Pareto front, and the folds' training,
validation and test periods.

The page uses the shell of the other reports (:func:`quantorch.backtest.report.write_page`):
the shared plotly.js beside it, no network, written atomically. The figures come from
:mod:`quantorch.walkforward`; this module only lays them out.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from quantorch.backtest.report import (
    _meta_table,
    html_escape,
    html_note,
    remove_stale_partials,
    write_page,
)
from quantorch.evaluation_report import (
    _LINE_COLOURS,
    _ORCHESTRATOR_SYMBOLS,
    _PLOT_CONFIG,
    _TARGETS,
    _finite,
    _interval,
    _num,
    _pct,
    _usd,
)
from quantorch.store import code_version
from quantorch.walkforward import COMPARED_AGAINST, WalkForward, WalkForwardRow, describe_target

__all__ = [
    "SECTIONS",
    "WALKFORWARD_CHART_IDS",
    "pareto_front",
    "report_name",
    "write_walkforward_report",
]

#: ``id`` of each chart's ``<div>``.
WALKFORWARD_CHART_IDS = ("wf-equity-chart", "wf-fold-sharpe-chart", "wf-cost-sharpe-chart")
#: Target letters in words (the single-window ones, and the walk-forward's d and e).
_TARGET_WORDS = {**_TARGETS, "d": "beats buy-and-hold", "e": "beats free-tools routing"}
#: Sections, in page order: (anchor, heading).
SECTIONS = (
    ("results", "Stitched out-of-sample results"),
    ("targets", "Target checks"),
    ("differences", "Paired Sharpe differences against the baselines"),
    ("equity", "Stitched equity curves"),
    ("fold-sharpe", "Sharpe of each fold"),
    ("cost-sharpe", "Tool cost per decision vs Sharpe"),
    ("folds", "Folds: the periods every figure comes from"),
)
_RESULT_HEADER = (
    "orchestrator", "profile", "Sharpe [95% bootstrap]", "DSR", "CAGR", "max drawdown",
    "exposure", "tool cost per decision", "calls per decision", "sessions", "test years",
)  # fmt: skip


def report_name(result: WalkForward) -> str:
    """``<sweep id>-<first test year>-<last test year>.html``: a sweep widened later keeps
    the page of its narrower range."""
    years = [f.test_year for f in result.folds]
    return f"{result.sweep_id}-{years[0]}-{years[-1]}.html"


def write_walkforward_report(result: WalkForward, folder: Path) -> Path:
    """Write ``<folder>/<report_name(result)>`` and return its absolute path.

    Parameters
    ----------
    result
        The :class:`~quantorch.walkforward.WalkForward` to show; its rows need their stitched
        ``returns`` for the equity charts.
    folder
        Report folder; created if missing, and receives the shared plotly.js.
    """
    rows = list(result.rows)
    profiles = list(dict.fromkeys(r.profile for r in rows))
    orchestrators = list(dict.fromkeys(r.orchestrator for r in rows))
    years = [f.test_year for f in result.folds]
    title = f"quantorch walk-forward {result.sweep_id}"
    meta = {
        "sweep": result.sweep_id,
        "out of sample": f"{years[0]} to {years[-1]}: {len(years)} yearly folds, each test "
                         "year after its own training and validation years, stitched",
        "profiles": ", ".join(profiles) or "none",
        "orchestrators": ", ".join(orchestrators) or "none",
        "trials (for the DSR)": str(result.trials),
        "folds": f"{len(result.computed_folds)} computed, {len(result.reused_folds)} reused "
                 "from the sweep folder",
        "sweep folder": str(result.sweep_dir),
        "code version": code_version(),
    }
    nav = "".join(f'<a href="#{anchor}">{html_escape(name.split(":")[0])}</a>'
                  for anchor, name in SECTIONS)
    content = {
        "results": _results_section(rows),
        "targets": _targets_section(result.targets),
        "differences": _differences_section(rows),
        "equity": _equity_section(rows, profiles, orchestrators, result),
        "fold-sharpe": _fold_sharpe_section(rows, profiles, orchestrators, years),
        "cost-sharpe": _cost_sharpe_section(rows, profiles, orchestrators),
        "folds": _folds_section(result),
    }
    body = "\n".join([
        f"<h1>{html_escape(title)}</h1>",
        _meta_table(meta),
        f"<nav>{nav}</nav>",
        *(f'<h2 id="{anchor}">{html_escape(name)}</h2>\n{content[anchor]}'
          for anchor, name in SECTIONS),
        html_note(
            f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by quantorch. Every "
            "orchestrator is backtested on each test year with the same engine, data and "
            "costs as <code>quantorch backtest</code>; see docs/walkforward.md."
        ),
    ])  # fmt: skip
    folder = Path(folder)
    remove_stale_partials(folder)
    return write_page(folder / report_name(result), title, body).resolve()


# --------------------------------------------------------------------------- tables


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, keys: int = 1,
           css: str = "results", groups: Sequence[str] | None = None) -> str:
    """Cells are escaped HTML; the first ``keys`` columns are left-aligned; a change of
    ``groups[i]`` draws a rule above row ``i``."""
    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(f'<{tag} class="key">{v}</{tag}>' if i < keys else f"<{tag}>{v}</{tag}>"
                       for i, v in enumerate(values))

    lines = []
    for i, row in enumerate(rows):
        rule = groups is not None and i > 0 and groups[i] != groups[i - 1]
        css_row = ' class="group"' if rule else ""
        lines.append(f'<tr{css_row}>{cells(row, "td")}</tr>')
    table = f'<table class="{css}"><tr>{cells(header, "th")}</tr>{"".join(lines)}</table>'
    return f'<div class="wide">{table}</div>'


def _years(row: WalkForwardRow) -> str:
    years = sorted(row.per_fold_sharpe)
    if not years:
        return "n/a"
    return f"{years[0]}-{years[-1]} ({len(years)})" if len(years) > 1 else str(years[0])


def _results_section(rows: Sequence[WalkForwardRow]) -> str:
    if not rows:
        return html_note("No results.")
    body = [[
        html_escape(r.orchestrator), html_escape(r.profile),
        _interval(r.sharpe, r.sharpe_ci_bootstrap, _num), _num(r.deflated_sharpe),
        _pct(r.cagr), _pct(r.max_drawdown), _num(r.exposure), _usd(r.tool_cost_per_decision_usd, 4),
        _num(r.calls_per_decision), f"{r.sessions:,}", _years(r),
    ] for r in rows]  # fmt: skip
    tools = sorted({t for r in rows for t in r.tool_calls_per_decision})
    mix = [[html_escape(r.orchestrator), html_escape(r.profile),
            *(_pct(r.tool_calls_per_decision.get(t, 0.0), 0) for t in tools)] for r in rows]
    groups = [r.profile for r in rows]
    parts = [
        _table(_RESULT_HEADER, body, keys=2, groups=groups),
        html_note(
            "Each row is one orchestrator under one profile, its test years' daily returns "
            "stitched end to end (one return per test session). Sharpe: annualised, with the "
            "95% interval of a stationary block bootstrap (mean block 21 sessions, 1,000 "
            "resamples). DSR: the Deflated Sharpe Ratio, the probability that the true Sharpe "
            "beats the best of as many skill-less trials as rows in this table. Exposure: "
            "mean gross exposure. Tool cost per decision: all folds' cost / all decisions "
            "(the llm orchestrator's tokens included). Test years: the folds the row is "
            "stitched from (their periods are in the last section)."
        ),
    ]
    if tools:
        parts += [
            "<h3>Share of decisions calling each tool</h3>",
            _table(["orchestrator", "profile", *map(html_escape, tools)], mix, keys=2,
                   groups=groups),
            html_note("A decision counts once per tool however many of its providers it "
                      "called; over all folds' decisions. Target b compares these rates "
                      "between profiles."),
        ]
    return "\n".join(parts)


def _targets_section(targets: dict) -> str:
    if not targets:
        return html_note("No target could be checked (they need the policy row and its "
                         "baselines).")
    lines, letter_shown = [], None
    for key, target in targets.items():
        letter, _, subject = key.partition(":")
        if letter != letter_shown:  # one heading row per target: its words and its rule
            letter_shown = letter
            lines.append(
                f'<tr class="group"><td class="key" colspan="3" style="background:#fafafa">'
                f"<b>{html_escape(letter)}: {html_escape(_TARGET_WORDS.get(letter, letter))}"
                f"</b> \u2014 {html_escape(target.get('rule', ''))}</td></tr>"
            )
        if subject:
            name = f"{'tool' if letter == 'b' else 'profile'} {html_escape(subject)}"
        else:
            name = "every shipped profile"
        verdict = ('<span class="met">met</span>' if target.get("met")
                   else '<span class="not-met">not&nbsp;met</span>')
        lines.append(f'<tr><td class="key">{name}</td>'
                     f'<td class="key">{html_escape(describe_target(key, target))}</td>'
                     f'<td class="key">{verdict}</td></tr>')
    head = "".join(f'<th class="key">{h}</th>' for h in ("check", "figures", "result"))
    return "\n".join([
        f'<table class="targets"><tr>{head}</tr>{"".join(lines)}</table>',
        html_note(
            "On the stitched walk-forward rows (docs/walkforward.md, \"Target checks\"). a, c, "
            "d and e are checked per profile, b per tool (any profile that prefers it will "
            "do; the figures are that profile's); \"paired 95%\" is the stationary bootstrap "
            "interval of the Sharpe difference on the same resampled days."
        ),
    ])  # fmt: skip


def _differences_section(rows: Sequence[WalkForwardRow]) -> str:
    baselines = [b for b in COMPARED_AGAINST if any(b in r.versus for r in rows)]
    compared = [r for r in rows if r.versus]
    if not compared:
        return html_note("No baseline was evaluated beside an orchestrator.")
    body = []
    for r in compared:
        cells = [html_escape(r.orchestrator), html_escape(r.profile)]
        for baseline in baselines:
            d = r.versus.get(baseline)
            if d is None:
                cells.append("-")
                continue
            text = _interval(d.get("difference"), (d.get("low"), d.get("high")), _signed)
            if d.get("significant"):
                better = _finite(d.get("difference")) and d["difference"] > 0
                text = f'<span class="{"met" if better else "not-met"}">{text}</span>'
            cells.append(text)
        body.append(cells)
    return "\n".join([
        _table(["orchestrator", "profile", *(f"minus {html_escape(b)}" for b in baselines)],
               body, keys=2, groups=[r.profile for r in compared]),
        html_note("Stitched Sharpe of the row minus the baseline's under the same profile, with "
                  "the 95% interval of a paired stationary block bootstrap (both series "
                  "resampled on the same days, so their correlation is kept). Green: the "
                  "interval is above zero; red: below zero; plain: it contains zero."),
    ])


def _signed(value: object) -> str:
    return f"{float(value):+,.2f}" if _finite(value) else "n/a"  # type: ignore[arg-type]


def _folds_section(result: WalkForward) -> str:
    computed = set(result.computed_folds)
    body = []
    for fold in result.folds:
        trained = result.trained.get(fold.test_year, {})
        cells = [
            str(fold.test_year),
            f"{fold.train_start} to {fold.train_end}",
            f"{fold.val_start} to {fold.val_end}",
            f"{fold.test_start} to {fold.test_end}",
        ]
        for name in ("policy", "all-tools"):
            summary = trained.get(name)
            cells.append("-" if not summary else (
                f"{_signed(summary.get('best_validation_bps'))} bps at step "
                f"{summary.get('best_step', 0):,} of {summary.get('steps_done', 0):,}"))
        cells += ["computed" if fold.test_year in computed else "reused",
                  f"{result.fold_seconds.get(fold.test_year, math.nan):,.0f} s"]
        body.append(cells)
    return "\n".join([
        _table(["test year", "training", "validation", "test", "policy: best validation",
                "all-tools head: best validation", "this run", "fold time"], body),
        html_note("Training, validation and test never share a day; the checkpoint kept is the "
                  "best on the validation year, and only the test year enters the figures "
                  "above. Reused folds were read from the sweep folder (a resumed or widened "
                  "sweep); delete a fold file to recompute it."),
    ])


# --------------------------------------------------------------------------- charts


def _colours(orchestrators: Sequence[str]) -> dict[str, str]:
    return {o: _LINE_COLOURS[i % len(_LINE_COLOURS)] for i, o in enumerate(orchestrators)}


def _div(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=div_id,
                       config=_PLOT_CONFIG)


def _legend_on_top(height: int) -> dict:
    return {"orientation": "h", "yanchor": "bottom", "y": 1.0 + 36 / height, "xanchor": "left",
            "x": 0}


def _equity_section(rows: Sequence[WalkForwardRow], profiles: Sequence[str],
                    orchestrators: Sequence[str], result: WalkForward) -> str:
    with_curve = [r for r in rows if r.returns is not None and len(r.returns) > 1]
    if not with_curve:
        return html_note("No stitched returns to draw.")
    shown = [p for p in profiles if any(r.profile == p for r in with_curve)]
    height = 250 * len(shown) + 90
    fig = make_subplots(rows=len(shown), cols=1, shared_xaxes=True,
                        subplot_titles=[f"profile: {p}" for p in shown],
                        vertical_spacing=min(0.08, 0.3 / len(shown)))
    colour = _colours(orchestrators)
    for k, profile in enumerate(shown, start=1):
        for row in (r for r in with_curve if r.profile == profile):
            equity = row.equity
            fig.add_scatter(
                x=list(pd.DatetimeIndex(equity.index).strftime("%Y-%m-%d")),
                y=equity.to_numpy(dtype=np.float32), name=row.orchestrator,
                legendgroup=row.orchestrator, showlegend=k == 1,
                line={"color": colour[row.orchestrator], "width": 1.3},
                hovertemplate=f"{html_escape(row.orchestrator)}: %{{y:.3f}}<extra></extra>",
                row=k, col=1,
            )
        fig.update_yaxes(title_text="growth of $1", tickformat=".2f", row=k, col=1)
    for fold in result.folds[1:]:  # where one test year hands over to the next
        fig.add_vline(x=fold.test_start.isoformat(), line={"color": "#bbb", "width": 1,
                                                           "dash": "dot"})
    fig.update_layout(template="plotly_white", height=height, hovermode="x unified",
                      margin={"l": 80, "r": 20, "t": 70, "b": 40},
                      legend=_legend_on_top(height))
    fig.update_xaxes(hoverformat="%Y-%m-%d")
    return _div(fig, WALKFORWARD_CHART_IDS[0]) + html_note(
        "Growth of $1 over the stitched test years, one line per orchestrator: each year is "
        "traded out of sample by that fold's checkpoints, starting from cash (so its first "
        "trades' costs are in it), and the years are compounded end to end. Dotted lines: "
        "where one fold's test year ends and the next begins."
    )


def _fold_sharpe_section(rows: Sequence[WalkForwardRow], profiles: Sequence[str],
                         orchestrators: Sequence[str], years: Sequence[int]) -> str:
    if not rows:
        return html_note("No results.")
    height = 250 * len(profiles) + 90
    fig = make_subplots(rows=len(profiles), cols=1, shared_xaxes=True,
                        subplot_titles=[f"profile: {p}" for p in profiles],
                        vertical_spacing=min(0.08, 0.3 / len(profiles)))
    colour = _colours(orchestrators)
    labels = [str(y) for y in years]
    for k, profile in enumerate(profiles, start=1):
        for row in (r for r in rows if r.profile == profile):
            sharpe = [row.per_fold_sharpe.get(y, math.nan) for y in years]
            low, high = zip(*(_bounds(row.per_fold_sharpe_ci.get(y)) for y in years),
                            strict=True)
            fig.add_bar(
                x=labels, y=sharpe, name=row.orchestrator, legendgroup=row.orchestrator,
                showlegend=k == 1, marker_color=colour[row.orchestrator],
                error_y={"type": "data", "symmetric": False, "thickness": 1, "width": 2,
                         "color": "#444",
                         "array": [h - s if _finite(h) and _finite(s) else 0.0
                                   for s, h in zip(sharpe, high, strict=True)],
                         "arrayminus": [s - lo if _finite(lo) and _finite(s) else 0.0
                                        for s, lo in zip(sharpe, low, strict=True)]},
                customdata=np.column_stack([low, high]),
                hovertemplate=(f"{html_escape(row.orchestrator)} %{{x}}: Sharpe %{{y:.2f}} "
                               "[%{customdata[0]:.2f}, %{customdata[1]:.2f}]<extra></extra>"),
                row=k, col=1,
            )
        fig.update_yaxes(title_text="Sharpe", zeroline=True, zerolinecolor="#999", row=k,
                         col=1)
    fig.update_layout(template="plotly_white", height=height, barmode="group",
                      bargap=0.25, hovermode="closest",
                      margin={"l": 80, "r": 20, "t": 70, "b": 40},
                      legend=_legend_on_top(height))
    fig.update_xaxes(type="category", showticklabels=True)  # years under every chart
    return _div(fig, WALKFORWARD_CHART_IDS[1]) + html_note(
        "Each bar is one test year's annualised Sharpe ratio; the whisker is its 95% interval "
        "(stationary block bootstrap of that year's daily returns, mean block 21 sessions, "
        "1,000 resamples). One year is short: expect wide whiskers."
    )


def _bounds(interval: Sequence[float | None] | None) -> tuple[float, float]:
    low, high = (tuple(interval) + (None, None))[:2] if interval is not None else (None, None)
    return (float(low) if _finite(low) else math.nan, float(high) if _finite(high) else math.nan)


def pareto_front(costs: Sequence[float], sharpes: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and Sharpe (higher),
    by increasing cost; points with a NaN are left out."""
    points = [(c, s, i) for i, (c, s) in enumerate(zip(costs, sharpes, strict=True))
              if _finite(c) and _finite(s)]
    front = [i for c, s, i in points
             if not any(c2 <= c and s2 >= s and (c2 < c or s2 > s) for c2, s2, _ in points)]
    return sorted(front, key=lambda i: (costs[i], -sharpes[i]))


def _cost_sharpe_section(rows: Sequence[WalkForwardRow], profiles: Sequence[str],
                         orchestrators: Sequence[str]) -> str:
    if not rows:
        return html_note("No results to plot.")
    colour = _colours(orchestrators)
    symbol = {p: _ORCHESTRATOR_SYMBOLS[i % len(_ORCHESTRATOR_SYMBOLS)]
              for i, p in enumerate(profiles)}
    costs = [r.tool_cost_per_decision_usd for r in rows]
    sharpes = [r.sharpe for r in rows]
    every = [c for r in rows for c in (r.tool_cost_per_decision_usd,
                                       *r.per_fold_tool_cost_per_decision_usd.values())
             if _finite(c)]
    span = max(every, default=0.0) or 1e-3
    # Profiles often tie (buy-and-hold is the same run under every profile, free tools cost
    # nothing): nudge each profile sideways by a fixed share of the axis so none hides another
    shift = {p: (i - (len(profiles) - 1) / 2) * span * 0.012 for i, p in enumerate(profiles)}
    fig = go.Figure()
    for row in rows:  # one small point per fold
        years = sorted(row.per_fold_sharpe)
        cis = [_bounds(row.per_fold_sharpe_ci.get(y)) for y in years]
        cost = [row.per_fold_tool_cost_per_decision_usd.get(y, math.nan) for y in years]
        fig.add_scatter(
            x=[c + shift[row.profile] for c in cost],
            y=[row.per_fold_sharpe[y] for y in years], mode="markers", showlegend=False,
            marker={"color": colour[row.orchestrator], "symbol": symbol[row.profile],
                    "size": 7, "opacity": 0.45},
            customdata=[[y, lo, hi, c] for y, (lo, hi), c in zip(years, cis, cost, strict=True)],
            hovertemplate=(f"<b>{html_escape(row.orchestrator)}</b> under "
                           f"<b>{html_escape(row.profile)}</b>, test year %{{customdata[0]}}"
                           "<br>Sharpe %{y:.2f} [%{customdata[1]:.2f}, %{customdata[2]:.2f}]"
                           "<br>tool cost per decision $%{customdata[3]:.4f}<extra></extra>"),
        )
    for row in rows:  # the stitched points, large, with their interval
        low, high = _bounds(row.sharpe_ci_bootstrap)
        has_ci = _finite(low) and _finite(high) and _finite(row.sharpe)
        fig.add_scatter(
            x=[row.tool_cost_per_decision_usd + shift[row.profile]], y=[row.sharpe],
            mode="markers",
            showlegend=False,
            marker={"color": colour[row.orchestrator], "symbol": symbol[row.profile],
                    "size": 14, "line": {"color": "#111", "width": 1.5}},
            error_y={"type": "data", "symmetric": False, "thickness": 1.2, "width": 4,
                     "color": colour[row.orchestrator],
                     "array": [high - row.sharpe if has_ci else 0.0],
                     "arrayminus": [row.sharpe - low if has_ci else 0.0]},
            hovertemplate=(f"<b>{html_escape(row.orchestrator)}</b> under "
                           f"<b>{html_escape(row.profile)}</b>, stitched<br>Sharpe "
                           f"{_interval(row.sharpe, row.sharpe_ci_bootstrap, _num)}<br>tool "
                           f"cost per decision {_usd(row.tool_cost_per_decision_usd, 4)}"
                           "<extra></extra>"),
        )
    front = pareto_front(costs, sharpes)
    if front:
        fig.add_scatter(
            x=[costs[i] + shift[rows[i].profile] for i in front], y=[sharpes[i] for i in front],
            mode="lines", line={"color": "#111", "width": 1.5, "dash": "dash",
                                "shape": "hv"},
            name="Pareto front (stitched)", hoverinfo="skip",
        )
    for orchestrator in orchestrators:  # legend only: colour = orchestrator
        fig.add_scatter(x=[None], y=[None], mode="markers", name=orchestrator,
                        legendgroup="orchestrators",
                        legendgrouptitle_text="orchestrator (colour)",
                        marker={"color": colour[orchestrator], "symbol": "circle", "size": 11})
    for profile in profiles:  # legend only: marker = profile
        fig.add_scatter(x=[None], y=[None], mode="markers", name=profile,
                        legendgroup="profiles", legendgrouptitle_text="profile (marker)",
                        marker={"color": "#777", "symbol": symbol[profile], "size": 11})
    for size, text, outline in ((7, "one test year", 0), (14, "stitched", 1.5)):
        fig.add_scatter(x=[None], y=[None], mode="markers", name=text, legendgroup="size",
                        legendgrouptitle_text="point",
                        marker={"color": "#bbb", "size": size,
                                "line": {"color": "#111", "width": outline}})
    fig.update_layout(
        template="plotly_white", height=540, hovermode="closest",
        margin={"l": 70, "r": 20, "t": 20, "b": 60},
        legend={"groupclick": "toggleitem", "tracegroupgap": 14, "itemclick": False},
        xaxis={"title": {"text": "tool cost per decision (USD)"}, "tickformat": "$,.3f",
               "range": [-0.05 * span, 1.05 * span], "zeroline": True},
        yaxis={"title": {"text": "Sharpe ratio (annualised)"}, "zeroline": True,
               "zerolinecolor": "#999"},
    )  # fmt: skip
    on_front = ", ".join(f"{rows[i].orchestrator} ({rows[i].profile})" for i in front)
    return _div(fig, WALKFORWARD_CHART_IDS[2]) + html_note(
        "Small faint points: one (orchestrator, profile) on one test year (that year's tool "
        "cost per decision and Sharpe). Large outlined points: the stitched figures, with "
        "their bootstrap 95% interval. Up and to the left is better; the markers of each "
        "profile are nudged sideways by 1.2% of the axis so ties stay visible (hover a point "
        "for its exact figures). The dashed step line is "
        "the Pareto front of the stitched points (none is both cheaper and higher): "
        f"{html_escape(on_front) or 'none'}."
    )

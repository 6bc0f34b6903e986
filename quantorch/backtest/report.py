"""The HTML tear sheet of one backtest, and the page shell every quantorch report uses.

A report is one HTML file with plotly charts and no network access. plotly.js (about 5 MB) is
not inlined: it is written once per report folder as ``plotly-<plotly version>.min.js``
(:func:`ensure_plotly_js`) and every page beside it loads it with a relative
``<script src>``, so a folder of a hundred reports holds one copy. A page moved away from its
folder still shows every table and says that its charts need that file.

Every file is written atomically: a temporary ``.<name>.<pid>.tmp`` in the same folder, then
``os.replace``, so a reader never sees half a report. A writer that crashed leaves its
temporary file behind, recognisable by its process id: :func:`remove_stale_partials` deletes
those whose process is gone.

The measures come from :mod:`quantorch.backtest.metrics`; this module only lays them out.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from quantorch.backtest.metrics import (
    METRIC_KEYS,
    RELATIVE_METRIC_KEYS,
    ROLLING_WINDOW,
    annual_returns,
    drawdown_series,
    monthly_returns,
    relative_metrics,
    rolling_beta,
    rolling_sharpe,
    rolling_volatility,
    simple_returns,
    worst_drawdowns,
)

__all__ = [
    "CHART_IDS",
    "MAX_TRADE_ROWS",
    "MAX_WEIGHT_SERIES",
    "Comparison",
    "ReportData",
    "ensure_plotly_js",
    "plotly_js_name",
    "remove_stale_partials",
    "write_page",
    "write_report",
]

#: The trades table shows at most this many fills (the most recent ones).
MAX_TRADE_ROWS = 500
#: The weights chart shows this many tickers (largest mean |weight|) and one "other" band.
MAX_WEIGHT_SERIES = 10
#: ``id`` of each chart's ``<div>``. "rolling-beta-chart" needs a comparison line and
#: "tool-cost-chart" tool calls; a chart without enough data is replaced by a note.
CHART_IDS = (
    "equity-chart",
    "drawdown-chart",
    "annual-returns-chart",
    "monthly-returns-chart",
    "rolling-sharpe-chart",
    "rolling-volatility-chart",
    "rolling-beta-chart",
    "exposure-chart",
    "weights-chart",
    "tool-cost-chart",
)


@dataclass(frozen=True)
class Comparison:
    """One line the strategy is compared with.

    Attributes
    ----------
    key
        ``"benchmark"`` (the index) or ``"equal_weight"``; other keys are shown like these.
    label
        What the line is, shown as is: e.g. "S&P 500 price index (excludes dividends)".
    equity
        Daily values, same currency and start value as the strategy.
    metrics
        :func:`~quantorch.backtest.metrics.performance_metrics` output for this line.
    """

    key: str
    label: str
    equity: pd.Series
    metrics: Mapping[str, float | None]


@dataclass(frozen=True)
class ReportData:
    """Everything the backtest report shows.

    Attributes
    ----------
    title
        Page title and heading.
    meta
        Run facts shown in the header, in order (run id, period, strategy, universe, costs,
        seed, config hash, code version, ...).
    equity, cash
        Strategy equity and cash at each session close.
    weights
        Sessions x tickers: position value over equity at the close (signed). A frame without
        columns means the run did not keep them: net exposure then comes from the cash.
    metrics
        :func:`~quantorch.backtest.metrics.performance_metrics` of the strategy; None or NaN
        shows as "n/a".
    comparisons
        Lines to compare with, possibly none; the first with key "benchmark" is the index.
    fills
        The engine's fills (see :data:`~quantorch.backtest.engine.FILL_COLUMNS`).
    tools
        :func:`~quantorch.backtest.runner.tool_usage` output for orchestrator runs, else None.
    tool_calls
        One row per tool call (``as_of`` naive UTC, ``tool``, ``provider``, ``cost_usd``).
    extra_sections
        ``(anchor, heading, html)`` sections shown after the performance table (a paper
        account's positions, orders, decisions); ``html`` is escaped already.
    """

    title: str
    meta: Mapping[str, str]
    equity: pd.Series
    cash: pd.Series
    weights: pd.DataFrame
    metrics: Mapping[str, float | None]
    comparisons: Sequence[Comparison]
    fills: pd.DataFrame
    tools: Mapping | None = None
    tool_calls: pd.DataFrame | None = None
    extra_sections: Sequence[tuple[str, str, str]] = ()


_LABELS = {
    "total_return": ("Total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "volatility": ("Volatility (annualised)", "pct"),
    "sharpe": ("Sharpe ratio", "ratio"),
    "sortino": ("Sortino ratio", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
    "calmar": ("Calmar ratio", "ratio"),
    "turnover": ("Turnover (traded notional / mean equity, per year)", "times"),
    "exposure": ("Mean gross exposure", "pct"),
    "fees_paid": ("Fees paid", "usd"),
    "slippage_paid": ("Slippage paid", "usd"),
}
_RELATIVE_LABELS = {
    "alpha": ("Alpha (annualised, daily CAPM intercept x 252)", "pct"),
    "beta": ("Beta", "ratio"),
    "correlation": ("Correlation of daily returns", "ratio"),
    "tracking_error": ("Tracking error (annualised)", "pct"),
    "information_ratio": ("Information ratio", "ratio"),
}
_STRATEGY_COLOUR = "#1f77b4"
_COMPARISON_COLOURS = {"benchmark": "#7f7f7f", "equal_weight": "#ff7f0e"}
_OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_TICKER_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79",
)  # fmt: skip
_OTHER_BAND_COLOUR = "#c7c7c7"
#: The weights chart samples at most this many sessions (a stacked area needs no more).
_MAX_WEIGHT_POINTS = 1000
#: A short mode bar (save, zoom, reset), so that it does not cover a legend.
_PLOT_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtons": [["toImage", "zoom2d", "resetScale2d"]],
}
_PARTIAL = re.compile(r"^\..+\.(\d+)\.tmp$")

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2.2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
h3 { font-size: 1rem; margin-top: 1.4rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .4rem 0; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; vertical-align: bottom; max-width: 16rem; }
td.key, th.key { text-align: left; }
table.meta td { text-align: left; }
tr.warning td { color: #9a3412; background: #fff7ed; }
.note { color: #555; font-size: .85rem; max-width: 60rem; }
.trades { max-height: 32rem; overflow-y: auto; display: inline-block; }
nav { font-size: .85rem; margin: .6rem 0 1rem; line-height: 1.6; }
nav a { margin-right: .8rem; color: #1f5fa8; text-decoration: none; }
tr.group td { border-top: 2px solid #bbb; }
table.results td { white-space: nowrap; }
table.results th, table.results td { padding: .25rem .45rem; }
.wide { overflow-x: auto; }
.met { color: #1a7f37; font-weight: 600; } .not-met { color: #b42318; font-weight: 600; }
#plotly-missing { display: none; background: #fff4e5; border: 1px solid #f0b45b;
                  padding: .6rem 1rem; margin: 1rem 0; }
"""


# --------------------------------------------------------------------------- files


def plotly_js_name() -> str:
    """File name of the shared plotly.js beside the reports: ``plotly-<version>.min.js``."""
    return f"plotly-{plotly.__version__}.min.js"


@functools.lru_cache(maxsize=1)
def _plotly_js_size() -> int:
    return len(get_plotlyjs().encode("utf-8"))


def ensure_plotly_js(folder: Path) -> str:
    """Write the shared plotly.js into ``folder`` unless it is there; return its file name.

    The file is written atomically and skipped when a file of the right size already exists
    (another report, or another process, wrote it).
    """
    folder = Path(folder)
    name = plotly_js_name()
    target = folder / name
    try:
        if target.stat().st_size == _plotly_js_size():
            return name
    except FileNotFoundError:
        pass
    _write_atomically(target, get_plotlyjs().encode("utf-8"))
    return name


def remove_stale_partials(folder: Path) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files in ``folder`` whose process is not running.

    Such a file is what a writer leaves when it is killed between writing and renaming. A
    file whose process still runs (it may be writing right now) is kept. Only use this on a
    folder that processes of this machine write: a process id means nothing on another host.

    Returns
    -------
    list of pathlib.Path
        The files deleted.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(".*.tmp"):
        match = _PARTIAL.match(candidate.name)
        if match is None or not candidate.is_file() or _process_running(int(match.group(1))):
            continue
        try:
            candidate.unlink()
        except FileNotFoundError:  # another cleaner was faster
            continue
        removed.append(candidate)
    return removed


def _process_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, ValueError):  # not a possible process id
        return False
    return True


def _write_atomically(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_page(path: Path, title: str, body: str) -> Path:
    """Write one report page (shared style, shared plotly.js beside it) atomically.

    Parameters
    ----------
    path
        Target file; its folder is created if missing and receives the shared plotly.js.
    title
        The page's ``<title>``.
    body
        The HTML inside ``<body>``.
    """
    path = Path(path)
    script = ensure_plotly_js(path.parent)
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script src="{_esc(script)}"></script>\n'
        "</head>\n<body>\n"
        f'<div id="plotly-missing">The charts need <code>{_esc(script)}</code> in the same '
        "folder as this page (quantorch writes it beside every report); the tables below "
        "are complete without it.</div>\n"
        f"{body}\n"
        '<script>if (typeof Plotly === "undefined") '
        'document.getElementById("plotly-missing").style.display = "block";</script>\n'
        "</body>\n</html>\n"
    )
    _write_atomically(path, page)
    return path


# --------------------------------------------------------------------------- the page


def write_report(path: Path, data: ReportData) -> Path:
    """Write the HTML tear sheet of one backtest to ``path`` (atomically) and return ``path``.

    Parameters
    ----------
    path
        Target file; its folder is created if missing and receives the shared plotly.js.
    data
        What to show. Empty fills, no comparisons, no tool calls, a one-session equity curve
        and missing metrics are all fine: a section without data says so.
    """
    equity = data.equity.dropna().astype(np.float64)
    comparisons = [c for c in data.comparisons if c.equity is not None]
    lines = [("Strategy", equity, _STRATEGY_COLOUR)] + [
        (c.label, c.equity.dropna().astype(np.float64), _colour(c, i))
        for i, c in enumerate(comparisons)
    ]
    has_tools = data.tools is not None or data.tool_calls is not None
    # Rolling charts start a window late: give them the whole period, aligned with the others.
    period = _dates(equity.index[[0, -1]]) if len(equity) > 1 else None
    sections = [
        ("performance", "Performance", _performance_section(data, comparisons)),
        *data.extra_sections,
        ("equity", "Equity", _equity_section(lines)),
        ("drawdown", "Drawdown", _drawdown_section(equity, lines)),
        ("returns", "Annual and monthly returns", _returns_section(equity, lines)),
        ("rolling", f"Rolling risk ({ROLLING_WINDOW} sessions)", _rolling_section(lines, period)),
        (
            "beta",
            f"Rolling beta ({ROLLING_WINDOW} sessions)",
            _beta_section(equity, comparisons, period),
        ),
        ("exposure", "Exposure and positions", _exposure_section(data, equity)),
        ("costs", "Costs", _costs_table(data.metrics, data.fills)),
    ]
    if has_tools:
        sections.append(("tools", "Tools", _tools_section(data.tools, data.tool_calls)))
    sections.append(("trades", "Trades", _trades_table(data.fills)))
    nav = "".join(f'<a href="#{anchor}">{_esc(name)}</a>' for anchor, name, _ in sections)
    body = "\n".join(
        [
            f"<h1>{_esc(data.title)}</h1>",
            _meta_table(data.meta),
            f"<nav>{nav}</nav>",
            *(f'<h2 id="{anchor}">{_esc(name)}</h2>\n{html_}' for anchor, name, html_ in sections),
            (
                f'<p class="note">Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by '
                "quantorch. Fills happen at the session after each decision (next open where "
                "opens exist, else next close); fees and slippage are always charged. Returns "
                "are daily simple returns; annualised figures use 252 sessions a year and a "
                "risk-free rate of zero.</p>"
            ),
        ]
    )
    return write_page(Path(path), data.title, body)


def _colour(comparison: Comparison, position: int) -> str:
    fallback = _OTHER_COLOURS[position % len(_OTHER_COLOURS)]
    return _COMPARISON_COLOURS.get(comparison.key, fallback)


# --------------------------------------------------------------------------- formatting


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _format(value: object, kind: str) -> str:
    if _is_missing(value):
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    if kind == "pct":
        return f"{number * 100:,.2f}%"
    if kind == "usd":
        return f"${number:,.2f}"
    if kind == "times":
        return f"{number:,.2f}\u00d7"
    if kind == "int":
        return f"{number:,.0f}"
    return f"{number:,.2f}"


def _day(value: object) -> str:
    return "n/a" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


#: Header facts shown as warnings (e.g. an LLM run over its model's training period).
WARNING_KEYS = ("training window",)


def _meta_table(meta: Mapping[str, str]) -> str:
    rows = "".join(
        f'<tr class="{"warning" if k in WARNING_KEYS else "fact"}"><td class="key"><b>{_esc(k)}'
        f'</b></td><td>{_esc(v)}</td></tr>' for k, v in meta.items()
    )
    return f'<table class="meta">{rows}</table>'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "") -> str:
    """A table whose first column is a left-aligned key; cells are already escaped HTML."""
    head = "".join(
        f'<th class="key">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="key">{c}</td>' if i == 0 else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><tr>{head}</tr>{body}</table>"


#: For pages built on this one (a paper account's): table cells must be escaped HTML.
html_table = _table
html_note = _note
html_escape = _esc


# --------------------------------------------------------------------------- sections


def _performance_section(data: ReportData, comparisons: Sequence[Comparison]) -> str:
    keys = list(METRIC_KEYS) + [k for k in data.metrics if k not in METRIC_KEYS]
    header = ["Metric", "Strategy", *(_esc(c.label) for c in comparisons)]
    rows = []
    for key in keys:
        label, kind = _LABELS.get(key, (key, "ratio"))
        cells = [_format(data.metrics.get(key), kind)]
        cells += [_format(c.metrics.get(key), kind) for c in comparisons]
        rows.append([_esc(label), *cells])
    parts = [_table(header, rows, "metrics")]
    if not comparisons:
        parts.append(_note("No comparison line (no benchmark configured)."))
        return "\n".join(parts)
    parts.append(
        _note(
            "Comparison lines: "
            + "; ".join(f"<b>{_esc(c.label)}</b>" for c in comparisons)
            + ". Each starts at the strategy's initial cash on its first session."
        )
    )
    relative = [relative_metrics(data.equity.dropna(), c.equity.dropna()) for c in comparisons]
    rel_rows = [
        [
            _esc(_RELATIVE_LABELS[key][0]),
            *(_format(r[key], _RELATIVE_LABELS[key][1]) for r in relative),
        ]
        for key in RELATIVE_METRIC_KEYS
    ]
    parts += [
        "<h3>Strategy against each comparison</h3>",
        _table(["Measure", *(f"vs {_esc(c.label)}" for c in comparisons)], rel_rows, "relative"),
        _note(
            "Ordinary least squares of the strategy's daily returns on the comparison's "
            "(r = alpha + beta \u00d7 b, risk-free rate 0), on the sessions both have. Tracking "
            "error is the annualised standard deviation of the daily return difference; the "
            "information ratio is its annualised mean over that standard deviation."
        ),
    ]
    return "\n".join(parts)


def _equity_section(lines: Sequence[tuple[str, pd.Series, str]]) -> str:
    fig = go.Figure()
    for name, series, colour in lines:
        fig.add_scatter(
            x=_dates(series.index),
            y=series.to_numpy(dtype=np.float32),
            name=name,
            line={"color": colour, "width": 1.8 if name == "Strategy" else 1.2},
            hovertemplate="%{y:,.0f}",
        )
    return _chart(
        _layout(fig, "equity (USD)", ",.0f"),
        "equity-chart",
        "Portfolio value at each session close, in USD, after fees and slippage; the "
        "comparison lines start from the same cash.",
        has_data=len(lines[0][1]) > 0,
    )


def _drawdown_section(equity: pd.Series, lines: Sequence[tuple[str, pd.Series, str]]) -> str:
    fig = go.Figure()
    for name, series, colour in lines:
        dd = drawdown_series(series)
        strategy = name == "Strategy"
        fig.add_scatter(
            x=_dates(dd.index),
            y=dd.to_numpy(dtype=np.float32),
            name=name,
            fill="tozeroy" if strategy else None,
            line={
                "color": colour,
                "width": 1 if strategy else 1.1,
                "dash": None if strategy else "dot",
            },
            hovertemplate="%{y:.1%}",
        )
    chart = _chart(
        _layout(fig, "drawdown", ".0%"),
        "drawdown-chart",
        "Fall from the running peak of each line (0% at a new high).",
        has_data=len(equity) > 1,
    )
    table = worst_drawdowns(equity, n=5)
    if table.empty:
        return chart + "\n<h3>Worst drawdowns</h3>\n" + _note("No drawdown in this period.")
    rows = [
        [
            str(i + 1),
            _day(row.start),
            _day(row.trough),
            "not recovered" if pd.isna(row.recovery) else _day(row.recovery),
            _format(row.depth, "pct"),
            f"{int(row.length):,}",
        ]
        for i, row in enumerate(table.itertuples(index=False))
    ]
    header = ["#", "Start (peak)", "Trough", "Recovery", "Depth", "Length (sessions)"]
    return "\n".join(
        [
            chart,
            "<h3>Worst drawdowns (strategy)</h3>",
            _table(header, rows, "drawdowns"),
            _note(
                "The five deepest falls from a peak. Length counts sessions from the peak to "
                "the recovery (the first close back at the peak), or to the last session when "
                "not recovered."
            ),
        ]
    )


def _returns_section(equity: pd.Series, lines: Sequence[tuple[str, pd.Series, str]]) -> str:
    yearly = {name: annual_returns(series) for name, series, _ in lines}
    years = sorted(set().union(*(s.index for s in yearly.values()))) if yearly else []
    fig = go.Figure()
    for name, _series, colour in lines:
        values = yearly[name].reindex(years)
        fig.add_bar(
            x=[str(y) for y in years],
            y=values.to_numpy(dtype=np.float64),
            name=name,
            marker_color=colour,
            hovertemplate="%{x}: %{y:.1%}",
        )
    fig = _layout(fig, "return", ".0%")
    fig.update_layout(barmode="group", hovermode="closest", xaxis={"type": "category"})
    first_year = pd.Timestamp(equity.index[0]).year if len(equity) else None
    partial = (
        f" {first_year} counts from the first session ({_day(equity.index[0])})"
        if first_year is not None
        else ""
    )
    parts = [
        _chart(
            fig,
            "annual-returns-chart",
            "Compounded return of each calendar year for the strategy and each comparison."
            + (partial + "; the last year to the last session." if partial else ""),
            has_data=len(equity) > 1,
        )
    ]
    if years:
        rows = [[str(y), *(_format(yearly[n].get(y), "pct") for n, _s, _c in lines)] for y in years]
        parts.append(_table(["Year", *(_esc(n) for n, _s, _c in lines)], rows, "annual"))
    parts += ["<h3>Monthly returns (strategy)</h3>", _monthly_chart(equity)]
    return "\n".join(parts)


def _monthly_chart(equity: pd.Series) -> str:
    table = monthly_returns(equity)
    z = table.to_numpy(dtype=np.float64) * 100.0
    text = np.where(np.isnan(z), "", np.char.mod("%.1f", np.nan_to_num(z)))
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=months,
            y=[str(y) for y in table.index],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0,
            zmin=-limit,
            zmax=limit,
            colorbar={"title": {"text": "%"}, "ticksuffix": "%"},
            hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
            xgap=1,
            ygap=1,
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=max(200, 28 * len(table) + 90),
        margin={"l": 60, "r": 20, "t": 34, "b": 40},  # the top margin holds the mode bar
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return _chart(
        fig,
        "monthly-returns-chart",
        "Compounded strategy return of each calendar month, in %; green gains, red losses.",
        has_data=bool(np.isfinite(z).any()),
    )


def _rolling_section(lines: Sequence[tuple[str, pd.Series, str]], period: list[str] | None) -> str:
    sharpe_fig, vol_fig = go.Figure(), go.Figure()
    enough = False
    for name, series, colour in lines:
        returns = simple_returns(series.to_numpy(dtype=np.float64))
        dates = _dates(series.index[1:])
        width = 1.6 if name == "Strategy" else 1.1
        sharpe = rolling_sharpe(returns, ROLLING_WINDOW)
        vol = rolling_volatility(returns, ROLLING_WINDOW)
        enough = enough or bool(np.isfinite(vol).any())
        for fig, values, fmt in ((sharpe_fig, sharpe, "%{y:.2f}"), (vol_fig, vol, "%{y:.1%}")):
            shown = np.isfinite(values)
            fig.add_scatter(
                x=[d for d, keep in zip(dates, shown, strict=True) if keep],
                y=values[shown].astype(np.float32),
                name=name,
                line={"color": colour, "width": width},
                hovertemplate=fmt,
            )
    window = f"{ROLLING_WINDOW} sessions (about six months)"
    need = f"Needs more than {ROLLING_WINDOW} sessions of data."
    sharpe_fig = _layout(sharpe_fig, "Sharpe ratio")
    sharpe_fig.add_hline(y=0, line={"color": "#999", "width": 1})
    vol_fig = _layout(vol_fig, "volatility (annualised)", ".0%")
    for fig in (sharpe_fig, vol_fig):
        fig.update_xaxes(range=period)
    return "\n".join(
        [
            "<h3>Rolling Sharpe ratio</h3>",
            _chart(
                sharpe_fig,
                "rolling-sharpe-chart",
                f"Annualised Sharpe ratio (risk-free rate 0) over the trailing {window}, "
                "plotted at the window's last session.",
                has_data=enough,
                missing=need,
            ),
            "<h3>Rolling volatility</h3>",
            _chart(
                vol_fig,
                "rolling-volatility-chart",
                f"Annualised standard deviation of daily returns over the trailing {window}.",
                has_data=enough,
                missing=need,
            ),
        ]
    )


def _beta_section(
    equity: pd.Series, comparisons: Sequence[Comparison], period: list[str] | None
) -> str:
    if not comparisons:
        return _note("No comparison line, so no beta.")
    fig = go.Figure()
    enough = False
    for i, comparison in enumerate(comparisons):
        both = pd.concat([equity, comparison.equity], axis=1, join="inner").dropna()
        r = simple_returns(both.iloc[:, 0].to_numpy(dtype=np.float64))
        b = simple_returns(both.iloc[:, 1].to_numpy(dtype=np.float64))
        beta = rolling_beta(r, b, ROLLING_WINDOW)
        shown = np.isfinite(beta)
        enough = enough or bool(shown.any())
        dates = _dates(both.index[1:])
        fig.add_scatter(
            x=[d for d, keep in zip(dates, shown, strict=True) if keep],
            y=beta[shown].astype(np.float32),
            name=f"beta to {comparison.label}",
            line={"color": _colour(comparison, i), "width": 1.4},
            hovertemplate="%{y:.2f}",
        )
    fig = _layout(fig, "beta")
    fig.update_xaxes(range=period)
    fig.add_hline(y=1, line={"color": "#bbb", "width": 1, "dash": "dash"})
    fig.add_hline(y=0, line={"color": "#999", "width": 1})
    return _chart(
        fig,
        "rolling-beta-chart",
        f"Beta of the strategy's daily returns to each comparison's over the trailing "
        f"{ROLLING_WINDOW} sessions: cov(strategy, comparison) / var(comparison). 1 moves with "
        "the line, 0 is unrelated to it.",
        has_data=enough,
        missing=f"Needs more than {ROLLING_WINDOW} sessions of data.",
    )


def _exposure_section(data: ReportData, equity: pd.Series) -> str:
    known_weights = data.weights is not None and data.weights.shape[1] > 0
    weights = (
        data.weights.reindex(equity.index).astype(np.float64).fillna(0.0)
        if known_weights
        else pd.DataFrame(index=equity.index, dtype=np.float64)
    )
    cash = (
        (data.cash.reindex(equity.index) / equity).astype(np.float64)
        if data.cash is not None
        else pd.Series(np.nan, index=equity.index)
    )
    # Equity = cash + the signed position values, so net exposure is also 1 - cash / equity:
    # it needs no per-ticker weights; gross exposure does.
    net = weights.sum(axis=1) if known_weights else 1.0 - cash
    lines = [("net exposure", net, "#d62728", None, None)]
    if known_weights:
        lines.insert(0, ("gross exposure", weights.abs().sum(axis=1), "#1f77b4", None, "tozeroy"))
    if data.cash is not None:
        lines.append(("cash / equity", cash, "#555555", "dot", None))
    dates = _dates(equity.index)
    fig = go.Figure()
    # Gross is a filled area and net a line over it: a long-only book has gross == net, and
    # two plain lines would hide one another.
    for name, values, colour, dash, fill in lines:
        fig.add_scatter(
            x=dates,
            y=values.to_numpy(dtype=np.float32),
            name=name,
            fill=fill,
            fillcolor="rgba(31, 119, 180, 0.25)" if fill else None,
            line={"color": colour, "width": 1.4 if fill is None else 0.8, "dash": dash},
            hovertemplate="%{y:.1%}",
        )
    note = (
        "At each close: gross exposure is the sum of |position value| over equity, net "
        "exposure the signed sum (longs minus shorts), cash is cash over equity."
    )
    if not known_weights:
        note += " This run has no per-ticker weights, so no gross exposure."
    parts = [
        "<h3>Gross and net exposure</h3>",
        _chart(
            _layout(fig, "share of equity", ".0%"),
            "exposure-chart",
            note,
            has_data=bool(np.isfinite(net.to_numpy(dtype=np.float64)).any()),
        ),
        "<h3>Weights per ticker</h3>",
        _weights_chart(weights)
        if known_weights
        else _note("Per-ticker weights are not available for this run."),
    ]
    return "\n".join(parts)


def _weights_chart(weights: pd.DataFrame) -> str:
    if weights.shape[1] == 0 or not (weights.abs().to_numpy() > 0).any():
        return _note("No positions were held.")
    ranking = weights.abs().mean().sort_values(ascending=False, kind="stable")
    n_tickers = len(ranking)
    top = list(ranking.index[:MAX_WEIGHT_SERIES])
    if n_tickers == MAX_WEIGHT_SERIES + 1:  # an "other" band of one ticker is that ticker
        top = list(ranking.index)
    bands = [
        (str(t), weights[t], _TICKER_COLOURS[i % len(_TICKER_COLOURS)]) for i, t in enumerate(top)
    ]
    rest = [t for t in ranking.index if t not in set(top)]
    if rest:
        bands.append((f"other ({len(rest)} tickers)", weights[rest], _OTHER_BAND_COLOUR))
    has_short = bool((weights.to_numpy() < 0).any())
    step = math.ceil(len(weights) / _MAX_WEIGHT_POINTS)
    sampled = np.unique(np.r_[np.arange(0, len(weights), step), len(weights) - 1])
    dates = _dates(weights.index[sampled])
    fig = go.Figure()
    for name, frame, colour in bands:
        frame = frame if isinstance(frame, pd.DataFrame) else frame.to_frame()
        sides = [("long", frame.clip(lower=0).sum(axis=1))]
        if has_short:
            sides.append(("short", frame.clip(upper=0).sum(axis=1)))
        for side, values in sides:
            if side == "short" and not (values < 0).any():
                continue
            fig.add_scatter(
                x=dates,
                y=values.to_numpy(dtype=np.float32)[sampled],
                name=name,
                legendgroup=name,
                showlegend=side == "long",
                stackgroup=side,
                mode="lines",
                line={"width": 0.5, "color": colour},
                fillcolor=colour,
                hovertemplate=f"{_esc(name)} ({side}): %{{y:.1%}}<extra></extra>",
            )
    fig = _layout(fig, "weight (share of equity)", ".0%")
    # A key beside the bands: up to 11 names do not fit a line above the chart.
    fig.update_layout(
        hovermode="closest",
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1, "yanchor": "top",
                "traceorder": "normal"},
    )  # fmt: skip
    shown = "every ticker" if not rest else f"the {len(top)} largest by mean |weight|"
    short_note = " Short positions stack below zero." if has_short else ""
    if step > 1:
        short_note += f" Shown every {step} sessions ({len(weights):,} in all)."
    return _chart(
        fig,
        "weights-chart",
        f"Position value over equity at each close, stacked: {shown}"
        + (f" and the other {len(rest)} tickers summed as one grey band." if rest else ".")
        + short_note,
        has_data=True,
    )


def _costs_table(metrics: Mapping[str, float | None], fills: pd.DataFrame) -> str:
    n_fills = len(fills)
    if n_fills:
        buys = int((fills["side"] == "buy").sum())
        traded = float(fills["notional"].abs().sum())
    else:
        buys, traded = 0, 0.0
    rows = [
        ("Fees paid", _format(metrics.get("fees_paid"), "usd")),
        ("Slippage paid", _format(metrics.get("slippage_paid"), "usd")),
        ("Traded notional", _format(traded, "usd")),
        (
            "Turnover (traded notional / mean equity, per year)",
            _format(metrics.get("turnover"), "times"),
        ),
        ("Number of fills", f"{n_fills:,} ({buys:,} buys, {n_fills - buys:,} sells)"),
    ]
    body = "".join(f'<tr><td class="key">{_esc(k)}</td><td>{_esc(v)}</td></tr>' for k, v in rows)
    return f'<table class="costs">{body}</table>'


def _tools_section(tools: Mapping | None, tool_calls: pd.DataFrame | None) -> str:
    parts = []
    if tools is not None:
        rows = [
            ("Decisions", _format(tools.get("decisions"), "int")),
            ("Tool calls", _format(tools.get("tool_calls"), "int")),
            ("Calls with data (the others were free and empty)",
             _format(tools.get("answered_calls", tools.get("tool_calls")), "int")),
            ("Calls per decision", _format(tools.get("calls_per_decision"), "ratio")),
            ("Tool cost (USD)", _usd(tools.get("tool_cost_usd"), 4)),
            ("Tool cost per decision (USD)", _usd(tools.get("tool_cost_per_decision_usd"), 5)),
            (
                "Tool cost (bps of traded notional)",
                _number(tools.get("tool_cost_bps_of_traded_notional"), 4),
            ),
        ]
        llm = tools.get("llm")
        if llm:  # the llm orchestrator's own bill and behaviour
            rows += [
                ("Orchestrator model", str(llm["model"])),
                ("Model tokens per decision", _format(llm["tokens_per_decision"], "int")),
                ("Model cost (USD)", _usd(llm["cost_usd"], 4)),
                ("Decision cost per decision, tools + model (USD)",
                 _usd(tools.get("decision_cost_per_decision_usd"), 5)),
                ("Requests answered from the transcript cache",
                 f"{llm['cached_requests']:,} of {llm['requests']:,}"),
                ("Fallbacks (position kept) / corrective re-prompts",
                 f"{llm['fallbacks']:,} ({llm['fallback_rate']:.1%}) / {llm['corrections']:,}"),
            ]
        summary = "".join(
            f'<tr><td class="key">{_esc(k)}</td><td>{_esc(v)}</td></tr>' for k, v in rows
        )
        parts.append(f"<table>{summary}</table>")
    if tool_calls is not None:
        parts.append(_tool_cost_charts(tool_calls))
    if tools is not None:
        mix = [[_esc(k), _format(v, "pct")] for k, v in (tools.get("tool_mix") or {}).items()]
        attribution = [
            [_esc(k), f"{v:+,.0f}" if not _is_missing(v) else "n/a"]
            for k, v in sorted(
                (tools.get("pnl_attribution_usd") or {}).items(),
                key=lambda kv: -abs(kv[1]) if not _is_missing(kv[1]) else 0.0,
            )
        ]
        parts += [
            "<h3>Tool-call mix</h3>",
            _table(["tool:provider", "share of calls"], mix) if mix else _note("No tool calls."),
            "<h3>P&amp;L by tools used</h3>",
            _note(
                "Each decision's target weight \u00d7 its forward return over the horizon "
                "\u00d7 equity at the decision, summed by the set of tools it called."
            ),
            _table(["tools used", "P&amp;L (USD)"], attribution) if attribution else _note("None."),
        ]
    return "\n".join(parts)


def _number(value: object, decimals: int) -> str:
    if _is_missing(value):
        return "n/a"
    return f"{float(value):,.{decimals}f}"  # type: ignore[arg-type]


def _usd(value: object, decimals: int) -> str:
    if _is_missing(value):
        return "n/a"
    return f"${float(value):,.{decimals}f}"  # type: ignore[arg-type]


def _tool_cost_charts(tool_calls: pd.DataFrame) -> str:
    if not len(tool_calls):
        return "<h3>Tool cost over time</h3>\n" + _note("No tool calls.")
    calls = pd.DataFrame(
        {
            "month": pd.DatetimeIndex(pd.to_datetime(tool_calls["as_of"])).to_period("M"),
            "tool": tool_calls["tool"].astype(str).to_numpy(),
            "cost": tool_calls["cost_usd"].astype(np.float64).fillna(0.0).to_numpy(),
        }
    )
    per_tool = (
        calls.groupby("tool")["cost"].agg(["size", "sum"]).sort_values("sum", ascending=False)
    )
    monthly = calls.pivot_table(
        index="month", columns="tool", values="cost", aggfunc="sum", fill_value=0.0
    )
    months = pd.period_range(monthly.index.min(), monthly.index.max(), freq="M")
    monthly = monthly.reindex(months, fill_value=0.0)
    labels = [m.strftime("%Y-%m") for m in months]
    fig = go.Figure()
    for i, tool in enumerate(per_tool.index):
        fig.add_bar(
            x=labels,
            y=monthly[tool].to_numpy(dtype=np.float64),
            name=str(tool),
            marker_color=_TICKER_COLOURS[i % len(_TICKER_COLOURS)],
            hovertemplate=f"{_esc(tool)} %{{x}}: $%{{y:,.2f}}<extra></extra>",
        )
    fig = _layout(fig, "tool cost (USD)", "$,.2f")
    fig.update_layout(barmode="stack", hovermode="closest", xaxis={"type": "category"})
    total = float(per_tool["sum"].sum())
    rows = [
        [
            _esc(tool),
            f"{int(row['size']):,}",
            _usd(row["sum"], 2),
            _format(row["sum"] / total, "pct") if total > 0 else "n/a",
            _usd(row["sum"] / row["size"], 4),
        ]
        for tool, row in per_tool.iterrows()
    ]
    return "\n".join(
        [
            "<h3>Tool cost over time</h3>",
            _chart(
                fig,
                "tool-cost-chart",
                "Tool cost paid in each calendar month (by the call's as-of time, UTC), "
                "stacked by tool.",
                has_data=True,
            ),
            "<h3>Tool cost per tool</h3>",
            _table(
                ["tool", "calls", "cost (USD)", "share of tool cost", "cost per call (USD)"], rows
            ),
        ]
    )


def _trades_table(fills: pd.DataFrame) -> str:
    if fills.empty:
        return _note("No fills.")
    shown = fills.iloc[-MAX_TRADE_ROWS:].iloc[::-1]  # fills are sorted by date: newest first
    left_out = len(fills) - len(shown)
    note = (
        f'<p class="note">Showing the {len(shown):,} most recent of {len(fills):,} fills '
        f"({left_out:,} older fills left out; all fills are in the run's store).</p>"
        if left_out
        else f'<p class="note">All {len(fills):,} fills, newest first.</p>'
    )
    header = (
        '<tr><th class="key">fill date</th><th class="key">decision date</th>'
        '<th class="key">ticker</th><th class="key">side</th><th>quantity</th>'
        "<th>fill price</th><th>notional</th><th>fees</th><th>slippage</th></tr>"
    )
    columns = {c: shown[c].to_numpy() for c in shown.columns}
    fill_dates = pd.DatetimeIndex(columns["fill_date"]).strftime("%Y-%m-%d")
    decision_dates = pd.DatetimeIndex(columns["decision_date"]).strftime("%Y-%m-%d")
    rows = []
    for i in range(len(shown)):
        rows.append(
            f'<tr><td class="key">{fill_dates[i]}</td><td class="key">{decision_dates[i]}</td>'
            f'<td class="key">{_esc(columns["ticker"][i])}</td>'
            f'<td class="key">{_esc(columns["side"][i])}</td>'
            f"<td>{columns['quantity'][i]:,.4f}</td><td>{columns['fill_price'][i]:,.4f}</td>"
            f"<td>{columns['notional'][i]:,.2f}</td><td>{columns['fees'][i]:,.2f}</td>"
            f"<td>{columns['slippage_cost'][i]:,.2f}</td></tr>"
        )
    return f'{note}<div class="trades"><table class="fills">{header}{"".join(rows)}</table></div>'


# --------------------------------------------------------------------------- charts


def _dates(index: pd.Index) -> list[str]:
    return list(pd.DatetimeIndex(index).strftime("%Y-%m-%d"))


def _layout(fig: go.Figure, y_title: str, y_format: str | None = None) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=360,
        margin={"l": 70, "r": 20, "t": 30, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        hovermode="x unified",
        yaxis_title=y_title,
    )
    fig.update_xaxes(hoverformat="%Y-%m-%d")
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return fig


def _chart(
    fig: go.Figure,
    div_id: str,
    note: str,
    *,
    has_data: bool,
    missing: str = "Not enough data for this chart.",
) -> str:
    """The chart's ``<div>`` and script with its note, or only a note without data."""
    if not has_data:
        return _note(missing)
    div = pio.to_html(
        fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=_PLOT_CONFIG
    )
    return f"{div}\n{_note(note)}"

"""A self-contained HTML report of one backtest.

One file, no network: plotly.js is inlined once in the page head and every chart is a plain
``<div>`` plus a small script. The file is written atomically (a temporary file in the same
folder, then ``os.replace``), so a reader never sees half a report.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from quantorch.backtest.metrics import METRIC_KEYS, drawdown_series, monthly_returns

__all__ = ["CHART_IDS", "MAX_TRADE_ROWS", "write_report"]

#: The trades table shows at most this many fills (the most recent ones).
MAX_TRADE_ROWS = 500
#: ``id`` of each chart's ``<div>``.
CHART_IDS = ("equity-chart", "drawdown-chart", "monthly-returns-chart")

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
_STRATEGY_COLOUR = "#1f77b4"
_BENCHMARK_COLOUR = "#7f7f7f"
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1200px; color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; font-size: .85rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.key, th.key { text-align: left; }
table.meta td { text-align: left; } .note { color: #666; font-size: .85rem; }
.trades { max-height: 32rem; overflow-y: auto; display: inline-block; }
"""


def write_report(
    path: Path,
    *,
    title: str,
    equity: pd.Series,
    benchmark_equity: pd.Series | None,
    metrics: Mapping[str, float | None],
    benchmark_metrics: Mapping[str, float | None] | None,
    fills: pd.DataFrame,
    meta: Mapping[str, str],
    tools: Mapping | None = None,
) -> Path:
    """Write the HTML report of one run to ``path`` (atomically) and return ``path``.

    Parameters
    ----------
    path
        Target file; its folder is created if missing.
    title
        Page title and heading.
    equity, benchmark_equity
        Daily equity of the strategy and (optionally) of the benchmark, same currency.
    metrics, benchmark_metrics
        :func:`~quantorch.backtest.metrics.performance_metrics` output; None or NaN values
        show as "n/a".
    fills
        The engine's fills (see :data:`~quantorch.backtest.engine.FILL_COLUMNS`).
    meta
        Run facts shown in the header (run id, period, strategy, universe, costs, seed,
        config hash, code version, ...), in order.
    tools
        For orchestrator runs, :func:`~quantorch.backtest.runner.tool_usage` output: adds a
        section with the tool-call mix, tool costs and P&L attribution by tools used.
    """
    path = Path(path)
    body = "\n".join(
        [
            f"<h1>{_esc(title)}</h1>",
            _meta_table(meta),
            "<h2>Performance</h2>",
            _metrics_table(metrics, benchmark_metrics),
            "<h2>Equity</h2>",
            _plot(_equity_figure(equity, benchmark_equity), CHART_IDS[0]),
            "<h2>Drawdown</h2>",
            _plot(_drawdown_figure(equity, benchmark_equity), CHART_IDS[1]),
            "<h2>Monthly returns (strategy)</h2>",
            _plot(_monthly_figure(equity), CHART_IDS[2]),
            "<h2>Costs</h2>",
            _costs_table(metrics, fills),
            _tools_section(tools) if tools is not None else "",
            "<h2>Trades</h2>",
            _trades_table(fills),
            (
                f'<p class="note">Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by '
                "quantorch. Fills happen at the session after each decision (next open where "
                "opens exist, else next close); fees and slippage are always charged.</p>"
            ),
        ]
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
    _write_atomically(path, page)
    return path


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_umask())  # mkstemp makes it private; a report is not
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def _format(value: float | None, kind: str) -> str:
    if _is_missing(value):
        return "n/a"
    value = float(value)  # type: ignore[arg-type]
    if kind == "pct":
        return f"{value * 100:,.2f}%"
    if kind == "usd":
        return f"${value:,.2f}"
    if kind == "times":
        return f"{value:,.2f}\u00d7"
    return f"{value:,.2f}"


def _meta_table(meta: Mapping[str, str]) -> str:
    rows = "".join(
        f'<tr><td class="key"><b>{_esc(k)}</b></td><td>{_esc(v)}</td></tr>' for k, v in meta.items()
    )
    return f'<table class="meta">{rows}</table>'


def _metrics_table(
    metrics: Mapping[str, float | None], benchmark: Mapping[str, float | None] | None
) -> str:
    keys = list(METRIC_KEYS) + [k for k in metrics if k not in METRIC_KEYS]
    header = '<tr><th class="key">Metric</th><th>Strategy</th>'
    header += "<th>Benchmark</th></tr>" if benchmark is not None else "</tr>"
    rows = []
    for key in keys:
        label, kind = _LABELS.get(key, (key, "ratio"))
        cells = f'<td class="key">{_esc(label)}</td><td>{_format(metrics.get(key), kind)}</td>'
        if benchmark is not None:
            cells += f"<td>{_format(benchmark.get(key), kind)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="metrics">{header}{"".join(rows)}</table>'


# --------------------------------------------------------------------------- charts


def _dates(index: pd.Index) -> list[str]:
    return [d.strftime("%Y-%m-%d") for d in pd.DatetimeIndex(index)]


def _layout(fig: go.Figure, y_title: str, y_format: str | None = None) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=380,
        margin={"l": 60, "r": 20, "t": 20, "b": 40},
        legend={"orientation": "h", "y": 1.08},
        hovermode="x unified",
        yaxis_title=y_title,
    )
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return fig


def _equity_figure(equity: pd.Series, benchmark: pd.Series | None) -> go.Figure:
    fig = go.Figure()
    equity = equity.dropna()
    fig.add_scatter(
        x=_dates(equity.index),
        y=equity.to_numpy(),
        name="strategy",
        line={"color": _STRATEGY_COLOUR, "width": 1.6},
    )
    if benchmark is not None:
        benchmark = benchmark.dropna()
        fig.add_scatter(
            x=_dates(benchmark.index),
            y=benchmark.to_numpy(),
            name="benchmark",
            line={"color": _BENCHMARK_COLOUR, "width": 1.2},
        )
    return _layout(fig, "equity (USD)", ",.0f")


def _drawdown_figure(equity: pd.Series, benchmark: pd.Series | None) -> go.Figure:
    fig = go.Figure()
    dd = drawdown_series(equity)
    fig.add_scatter(
        x=_dates(dd.index),
        y=dd.to_numpy(),
        name="strategy",
        fill="tozeroy",
        line={"color": _STRATEGY_COLOUR, "width": 1},
    )
    if benchmark is not None:
        bdd = drawdown_series(benchmark)
        fig.add_scatter(
            x=_dates(bdd.index),
            y=bdd.to_numpy(),
            name="benchmark",
            line={"color": _BENCHMARK_COLOUR, "width": 1, "dash": "dot"},
        )
    return _layout(fig, "drawdown", ".0%")


def _monthly_figure(equity: pd.Series) -> go.Figure:
    table = monthly_returns(equity)
    z = table.to_numpy() * 100.0
    text = np.where(np.isnan(z), "", np.char.mod("%.1f", np.nan_to_num(z)))
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=months,
            y=[str(y) for y in table.index],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0,
            colorbar={"title": "%"},
            hovertemplate="%{y} %{x}: %{z:.2f}%<extra></extra>",
        )
    )
    fig.update_layout(
        template="plotly_white",
        height=max(220, 26 * len(table) + 80),
        margin={"l": 60, "r": 20, "t": 20, "b": 40},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig


def _plot(fig: go.Figure, div_id: str) -> str:
    return pio.to_html(
        fig, include_plotlyjs=False, full_html=False, div_id=div_id, config=_PLOT_CONFIG
    )


# --------------------------------------------------------------------------- tables


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


def _tools_section(tools: Mapping) -> str:
    bps = tools.get("tool_cost_bps_of_traded_notional")
    rows = [
        ("Decisions", f"{tools['decisions']:,}"),
        ("Tool calls", f"{tools['tool_calls']:,}"),
        ("Calls per decision", f"{tools['calls_per_decision']:.2f}"),
        ("Tool cost (USD)", f"{tools['tool_cost_usd']:,.4f}"),
        ("Tool cost per decision (USD)", f"{tools['tool_cost_per_decision_usd']:.5f}"),
        ("Tool cost (bps of traded notional)", "n/a" if bps is None else f"{bps:.4f}"),
    ]
    summary = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    mix = "".join(
        f"<tr><td>{_esc(k)}</td><td>{v:.1%}</td></tr>" for k, v in tools.get("tool_mix", {}).items()
    )
    attribution = "".join(
        f"<tr><td>{_esc(k)}</td><td>{v:+,.0f}</td></tr>"
        for k, v in sorted(tools.get("pnl_attribution_usd", {}).items(), key=lambda kv: -abs(kv[1]))
    )
    return (
        "<h2>Tools</h2>"
        f"<table>{summary}</table>"
        "<h3>Tool-call mix</h3>"
        f"<table><tr><th>tool:provider</th><th>share of calls</th></tr>{mix}</table>"
        "<h3>P&amp;L by tools used</h3>"
        '<p class="note">Each decision\'s target weight x its forward return over the horizon '
        "x equity at the decision, summed by the set of tools it called.</p>"
        f"<table><tr><th>tools used</th><th>P&amp;L (USD)</th></tr>{attribution}</table>"
    )


def _trades_table(fills: pd.DataFrame) -> str:
    if fills.empty:
        return '<p class="note">No fills.</p>'
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

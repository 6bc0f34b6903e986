"""The HTML reports: complete, small (one shared plotly.js per folder), written atomically."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from quantorch.strategies import get_strategy

from quantorch.backtest.engine import Costs, simulate
from quantorch.backtest.metrics import performance_metrics
from quantorch.backtest.report import (
    CHART_IDS,
    MAX_TRADE_ROWS,
    Comparison,
    ReportData,
    plotly_js_name,
    remove_stale_partials,
    write_report,
)
from quantorch.data.panel import PricePanel

BENCHMARK_LABEL = "S&P 500 price index (excludes dividends)"
EQUAL_LABEL = "Equal-weight buy-and-hold (20 stocks, total return, costs charged)"


@pytest.fixture(scope="module")
def run(sample_panel: PricePanel):
    """A daily sma-cross backtest from 2019 with the S&P 500 index and equal weight beside it."""
    from skfolio.datasets import load_sp500_index

    cut = slice(pd.Timestamp("2019-01-02"), None)
    panel = PricePanel(
        *(getattr(sample_panel, f).loc[cut] for f in ("close", "open", "high", "low", "volume"))
    )
    strategy = get_strategy("sma-cross", {"fast": 10, "slow": 40})
    # Daily decisions: well over MAX_TRADE_ROWS fills.
    result = simulate(panel, strategy.target_weights(sample_panel, panel.dates), Costs(1, 5), 1e6)
    index = load_sp500_index()["SP500"]
    index.index = pd.DatetimeIndex(index.index).as_unit("ns")
    index = index.reindex(result.equity.index).ffill().dropna()
    benchmark = index / index.iloc[0] * 1e6
    equal_weight = pd.DataFrame(1 / 20, index=panel.dates[:1], columns=panel.close.columns)
    equal = simulate(panel, equal_weight, Costs(1, 5), 1e6)
    comparisons = (
        Comparison("benchmark", BENCHMARK_LABEL, benchmark, performance_metrics(benchmark)),
        Comparison(
            "equal_weight",
            EQUAL_LABEL,
            equal.equity,
            performance_metrics(equal.equity, equal.fills, equal.gross_exposure),
        ),
    )
    return result, comparisons


def _tool_calls(result) -> pd.DataFrame:
    """Two priced tool calls per weekly decision (what an orchestrator run logs)."""
    dates = result.equity.index[::5]
    return pd.DataFrame(
        {
            "as_of": np.repeat(dates.to_numpy(), 2),
            "tool": np.tile(["technical", "risk"], len(dates)),
            "provider": np.tile(["full", "fast"], len(dates)),
            "cost_usd": np.tile([0.002, 0.004], len(dates)),
        }
    )


def _data(result, comparisons, **overrides) -> ReportData:
    fields = {
        "title": "quantorch backtest bt-test: sma-cross",
        "meta": {"run id": "bt-test", "strategy": "sma-cross", "universe": "<AAPL & co>"},
        "equity": result.equity,
        "cash": result.cash,
        "weights": result.weights,
        "metrics": performance_metrics(result.equity, result.fills, result.gross_exposure),
        "comparisons": comparisons,
        "fills": result.fills,
    }
    fields.update(overrides)
    return ReportData(**fields)


def _write(tmp_path, data: ReportData, name: str = "bt-test.html"):
    return write_report(tmp_path / "reports" / name, data)


def test_report_is_complete_small_and_shares_plotly(tmp_path, run):
    result, comparisons = run
    tools = {
        "decisions": 200, "tool_calls": 400, "calls_per_decision": 2.0, "tool_cost_usd": 1.2,
        "tool_cost_per_decision_usd": 0.006, "tool_cost_bps_of_traded_notional": 0.01,
        "tool_mix": {"technical:full": 0.5, "risk:fast": 0.5},
        "pnl_attribution_usd": {"risk+technical": 1234.0},
    }  # fmt: skip
    data = _data(result, comparisons, tools=tools, tool_calls=_tool_calls(result))
    path = _write(tmp_path, data)
    assert path.exists() and path.parent.name == "reports"
    text = path.read_text(encoding="utf-8")

    # plotly.js: one relative reference to the shared file, never inlined, nothing remote.
    script = plotly_js_name()
    assert re.fullmatch(r"plotly-\d+\.\d+\.\d+.*\.min\.js", script)
    assert text.count(f'<script src="{script}"></script>') == 1
    assert "* plotly.js v" not in text
    assert not re.search(
        r"<(script|link)[^>]+(src|href)=[\"']?(https?:)?//", text, flags=re.IGNORECASE
    )
    shared = path.parent / script
    assert shared.stat().st_size == len(get_plotlyjs().encode("utf-8"))
    assert len(text) < 2_000_000
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, script])

    for chart in CHART_IDS:
        assert f'id="{chart}"' in text
    for heading in ("Performance", "Equity", "Drawdown", "Annual and monthly returns",
                    "Rolling risk (126 sessions)", "Rolling beta (126 sessions)",
                    "Exposure and positions", "Costs", "Tools", "Trades",
                    "Worst drawdowns (strategy)", "Tool cost per tool"):  # fmt: skip
        assert f">{heading}</h" in text, heading
    # One metrics column per comparison, each named by its label.
    index_label = html.escape(BENCHMARK_LABEL)  # "S&amp;P 500 price index ..."
    assert f"<th>{index_label}</th>" in text and f"<th>{html.escape(EQUAL_LABEL)}</th>" in text
    assert f"<th>vs {index_label}</th>" in text
    for label in ("Sharpe ratio", "Fees paid", "Alpha (annualised", "Beta", "Tracking error",
                  "Information ratio"):  # fmt: skip
        assert label in text
    assert "&lt;AAPL &amp; co&gt;" in text  # meta is escaped
    assert re.search(r"<td>-?\d+\.\d\d%</td>", text)  # percentages as %
    assert re.search(r"<td>20\d\d-\d\d-\d\d</td>", text)  # drawdown dates as YYYY-MM-DD
    assert "2019</td>" in text and "2022</td>" in text  # annual returns table
    left_out = len(result.fills) - MAX_TRADE_ROWS
    assert left_out > 0 and f"{left_out:,} older fills left out" in text
    assert text.count('<tr><td class="key">20') >= MAX_TRADE_ROWS  # trade rows, by date

    # A second report in the folder reuses the shared file (not rewritten).
    before = shared.stat().st_mtime_ns
    second = _write(tmp_path, data, "bt-second.html")
    assert second.exists() and shared.stat().st_mtime_ns == before


def test_report_with_nothing_to_compare_and_missing_figures(tmp_path, run):
    result, _ = run
    metrics = dict.fromkeys(performance_metrics(result.equity), float("nan"))
    metrics["sharpe"] = None
    data = _data(result, (), metrics=metrics, fills=result.fills.iloc[:0])
    text = _write(tmp_path, data).read_text(encoding="utf-8")
    assert "n/a" in text and "No fills." in text
    assert "No comparison line" in text and 'id="rolling-beta-chart"' not in text
    assert ">Tools</h2>" not in text and 'id="tool-cost-chart"' not in text
    assert 'id="equity-chart"' in text and 'id="rolling-sharpe-chart"' in text


def test_report_without_per_ticker_weights(tmp_path, run):
    result, comparisons = run
    weights = pd.DataFrame(index=result.equity.index)  # what a stored run may give back
    text = _write(tmp_path, _data(result, comparisons, weights=weights)).read_text("utf-8")
    assert "Per-ticker weights are not available" in text and 'id="weights-chart"' not in text
    assert 'id="exposure-chart"' in text and "no gross exposure" in text


def test_report_of_a_single_session_and_no_positions(tmp_path, run):
    result, comparisons = run
    one = result.equity.iloc[:1]
    data = _data(
        result,
        [Comparison(c.key, c.label, c.equity.iloc[:1], c.metrics) for c in comparisons],
        equity=one,
        cash=result.cash.iloc[:1],
        weights=result.weights.iloc[:1] * 0.0,
        metrics=performance_metrics(one),
        fills=result.fills.iloc[:0],
        tools={"decisions": 0, "tool_calls": 0},
        tool_calls=_tool_calls(result).iloc[:0],
    )
    text = _write(tmp_path, data).read_text(encoding="utf-8")
    assert "No drawdown in this period." in text and "No positions were held." in text
    assert "Needs more than 126 sessions" in text and "No tool calls." in text
    assert "No fills." in text


def test_report_with_short_positions_and_many_tickers(tmp_path, run):
    result, comparisons = run
    rng = np.random.default_rng(0)
    tickers = [f"T{i:03d}" for i in range(300)]
    weights = pd.DataFrame(
        rng.normal(0.0, 0.01, (len(result.equity), len(tickers))),
        index=result.equity.index, columns=tickers,
    )  # fmt: skip
    text = _write(tmp_path, _data(result, comparisons, weights=weights)).read_text("utf-8")
    assert "other (290 tickers)" in text and "Short positions stack below zero." in text
    assert text.count('"stackgroup":"long"') == 11 and text.count('"stackgroup":"short"') == 11


def test_a_failed_write_leaves_the_old_report_and_no_partial(tmp_path, run, monkeypatch):
    result, comparisons = run
    path = _write(tmp_path, _data(result, comparisons))
    old = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, _data(result, comparisons, title="new"))
    assert path.read_bytes() == old
    assert not list(path.parent.glob(".*.tmp"))


def test_remove_stale_partials_keeps_those_of_running_processes(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    stale = tmp_path / f".bt-1.html.{dead_pid}.tmp"
    mine = tmp_path / f".bt-2.html.{os.getpid()}.tmp"
    unrelated = tmp_path / ".notes.tmp"
    report = tmp_path / "bt-3.html"
    for file in (stale, mine, unrelated, report):
        file.write_text("x")
    assert remove_stale_partials(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and unrelated.exists() and report.exists()
    assert remove_stale_partials(tmp_path / "missing") == []


def test_evaluation_report_is_readable(tmp_path, sample_panel):
    from quantorch.evaluation import Evaluation, EvaluationRow
    from quantorch.evaluation_report import EVALUATION_CHART_IDS, write_evaluation_report

    panel = PricePanel.from_close(sample_panel.close.loc["2021-01-04":])
    equities = {
        name: simulate(panel, get_strategy(name, params).target_weights(sample_panel, panel.dates),
                       Costs(1, 5), 1e6).equity
        for name, params in (("buy-and-hold", None), ("sma-cross", {"fast": 10, "slow": 40}))
    }  # fmt: skip
    rows = []
    for profile, adherence in (("neutral", None), ("active-technical", 0.9822)):
        for orchestrator, cost in (("buy-and-hold", 0.0), ("sma-cross", 0.0123)):
            m = performance_metrics(equities[orchestrator])
            rows.append(EvaluationRow(
                orchestrator=orchestrator, profile=profile, sharpe=m["sharpe"], cagr=m["cagr"],
                max_drawdown=m["max_drawdown"], turnover=1.5, tool_cost_usd=cost * 500,
                tool_cost_per_decision_usd=cost, calls_per_decision=1.32,
                preference_adherence=adherence, tool_share={}, sharpe_ci_seeds=(0.7, 0.84),
                sharpe_ci_bootstrap=(-0.16, 2.15), cagr_ci_bootstrap=(float("nan"), 0.3),
                seeds=2, per_seed_sharpe=[0.7, 0.84], equity=equities[orchestrator],
            ))  # fmt: skip
    assert "equity" not in rows[0].to_json()
    targets = {
        "a:neutral": {"rule": "policy Sharpe >= all-tools Sharpe at <= 30% of its tool cost",
                      "policy_sharpe": 0.957, "all_tools_sharpe": 0.623, "cost_ratio": 0.333,
                      "met": False},
        "c:neutral": {"rule": "policy Sharpe > random (matched cost) Sharpe",
                      "policy_sharpe": 0.97, "random_sharpe": 0.96, "policy_cost_usd": 6.93,
                      "random_cost_usd": 9.19, "met": True},
    }  # fmt: skip
    evaluation = Evaluation("ev-test", panel.dates[0].date(), panel.dates[-1].date(), rows, targets)
    path = write_evaluation_report(evaluation, tmp_path / "reports")
    text = path.read_text(encoding="utf-8")
    assert path.is_absolute() and path.name == "ev-test.html"
    assert f'<script src="{plotly_js_name()}"></script>' in text and "* plotly.js v" not in text
    assert (path.parent / plotly_js_name()).exists() and len(text) < 1_000_000
    for chart in EVALUATION_CHART_IDS:
        assert f'id="{chart}"' in text
    sharpe = rows[0].sharpe
    assert f"{sharpe:.2f} [-0.16, 2.15]" in text  # Sharpe with its bootstrap interval
    assert "98.2%" in text and "$6.15" in text and "$0.0123" in text and "1.32" in text
    assert "tool cost per decision (USD)" in text and '"mode":"markers"' in text
    assert '"mode":"markers+text"' not in text  # no text labels that overlap
    assert "profile (colour)" in text and "orchestrator (marker)" in text
    assert '<span class="not-met">not met</span>' in text and '<span class="met">met</span>' in text
    assert "policy cost / all-tools cost: 33.3%" in text
    assert "profile: active-technical" in text  # one small equity chart per profile
    assert f"{panel.dates[0]:%Y-%m-%d} to {panel.dates[-1]:%Y-%m-%d}" in text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_screenshot_of_the_report_shows_charts(tmp_path, run):
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from report_screenshots import screenshot

    result, comparisons = run
    path = _write(tmp_path, _data(result, comparisons, tool_calls=_tool_calls(result)))
    png = screenshot(path, tmp_path / "report.png", height=2400)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (2400, 1300)
    # The equity chart is drawn: many pixels of the strategy's blue, the index's grey and
    # the equal-weight orange (an empty or failed chart is white).
    blue = np.all(np.abs(image.astype(int) - (31, 119, 180)) < 40, axis=2).sum()
    orange = np.all(np.abs(image.astype(int) - (255, 127, 14)) < 40, axis=2).sum()
    assert blue > 5_000 and orange > 1_000, (blue, orange)
    assert (image < 250).any(axis=2).mean() > 0.05  # not a blank page
